"""The ``afnext`` command line: each command composes a Hydra config from ``conf/`` plus overrides.

Commands are registered in ``COMMANDS`` below; each takes the remaining arguments (Hydra overrides and the
command's own flags). Hydra appears here and in ``afnext.training`` only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from afnext.config import build_on_meta, compose_config, config_groups, expand_sweeps
from afnext.errors import AfnextError, ConfigError

__all__ = ["COMMANDS", "main"]


def _print_config(cfg: Any) -> None:
    from omegaconf import OmegaConf

    print(OmegaConf.to_yaml(cfg, resolve=False), end="")


def _cmd_data(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext data",
        description="Dataset tools. `afnext data build generator=template source=synthetic "
        "source.num_scenes=200 out=DIR seed=3` writes audio, AF3-style JSONL splits and a summary.",
    )
    parser.add_argument("action", choices=["build"], help="what to do")
    parser.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args(argv)
    from hydra.utils import instantiate

    cfg = compose_config("data_build", args.overrides, subdir="reasoning")
    if args.cfg:
        _print_config(cfg)
        return 0
    result = instantiate(cfg.build, _convert_="all")
    if result is not None and hasattr(result, "to_dict"):
        print(json.dumps(result.to_dict(), indent=2))
    return 0


def _cmd_config(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="afnext config", description="Print a composed config.")
    parser.add_argument("--name", default="train", help="primary config in conf/ (default: train)")
    parser.add_argument("--resolve", action="store_true", help="resolve interpolations")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args(argv)
    from omegaconf import OmegaConf

    cfg = compose_config(args.name, args.overrides)
    print(OmegaConf.to_yaml(cfg, resolve=args.resolve), end="")
    return 0


def _cmd_info(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext info",
        description="Compose a model config, build it on the meta device and print parameter counts "
        "per part (encoder, time embedding, connector, LLM, LoRA), trainable and total. "
        "Takes the same overrides as afnext train. Example: afnext info experiment=afnext_instruct",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args(argv)
    cfg = compose_config("train", args.overrides)
    model = build_on_meta(cfg)
    counts = model.parameter_counts()
    classes = model.part_classes()
    if args.json:
        print(
            json.dumps(
                {part: {**counts[part], "class": classes[part]} for part in counts}, indent=2
            )
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="afnext model parameters (built on the meta device)")
    for column in ("part", "class", "trainable", "total"):
        table.add_column(column, justify="right" if column in ("trainable", "total") else "left")
    for part, row in counts.items():
        table.add_row(part, classes[part], f"{row['trainable']:,}", f"{row['total']:,}")
    Console().print(table)
    return 0


RUN_NAME_ENV = "AFNEXT_RUN_NAME"
"""The run name rank 0 resolved (``run_name=${now:...}``): ranks Lightning starts by re-running the command
read it, so every rank writes to one run folder."""
JOB_ENV = "AFNEXT_SWEEP_JOB"
"""The sweep job rank 0 is running: a re-run rank runs that job only."""


def _cmd_train(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: afnext train [group=option ...] [key=value ...] [-m key=a,b ...] [--cfg]\n\n"
            "Train with the composed config (conf/train.yaml). Examples:\n"
            "  afnext train experiment=tiny trainer.max_steps=50\n"
            "  afnext train encoder=whisper_large_v3 connector=mlp llm=qwen2_5_7b curriculum=afnext\n"
            "  afnext train curriculum=afnext +stage=midtrain2 init_from=RUN_DIR\n"
            "  afnext train experiment=tiny -m optim.lr.default=1e-4,3e-4    # a sweep: one run per value\n"
            "Rerun with the same run_name=NAME to resume. --cfg prints the composed config and exits.\n"
        )
        return 0
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if a not in ("-m", "--multirun", "--cfg")]
    if "--cfg" in argv:
        _print_config(compose_config("train", overrides))
        return 0
    jobs = expand_sweeps(overrides) if multirun else [overrides]
    child = (
        os.environ.get("LOCAL_RANK", "0") != "0"
    )  # a rank Lightning (or torchrun) started beside rank 0
    saved = {k: os.environ.get(k) for k in (RUN_NAME_ENV, JOB_ENV)}
    try:
        if not any(a.startswith("run_name=") for a in overrides):
            name = (os.environ.get(RUN_NAME_ENV) if child else None) or str(
                compose_config("train", jobs[0]).run_name
            )
            os.environ[RUN_NAME_ENV] = name  # the ranks this one starts inherit it
            jobs = [[*job, f"run_name={name}"] for job in jobs]
        only = os.environ.get(JOB_ENV) if child else None
        for number, job in enumerate(jobs):
            if only is not None and str(number) != only:
                continue
            if multirun:
                os.environ[JOB_ENV] = str(number)
                base = compose_config("train", job)
                job = [*job, f"paths.run_dir={base.paths.runs_dir}/{base.run_name}/{number}"]
            _train_task(compose_config("train", job))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return 0


def _compose_build(overrides: list[str]) -> Any:
    return compose_config("data_build", overrides, subdir="reasoning")


def _train_task(cfg: Any) -> Any:
    """``afnext train``: an experiment with a data recipe (experiment=tiny) builds its data on first use."""
    from afnext.training.demo import ensure_demo_data
    from afnext.training.run import train

    ensure_demo_data(cfg, _compose_build)
    return train(cfg)


def _cmd_validate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext validate",
        description="Validation loss and answer accuracy of a saved model on the config's val split, "
        "overall and per audio-duration bucket (a table on stderr, JSON on stdout).",
    )
    parser.add_argument("--checkpoint", required=True, help="run, stage or model folder")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (data=..., data.val=[...])")
    args = parser.parse_args(argv)
    from afnext.training.run import validate

    cfg = compose_config("train", args.overrides)
    metrics = validate(cfg, args.checkpoint)
    from rich.console import Console
    from rich.table import Table

    from afnext.training.validation import bucket_rows

    table = Table(title="validation by audio duration")
    for column in ("duration", "samples", "loss", "accuracy"):
        table.add_column(column, justify="left" if column == "duration" else "right")
    for row in bucket_rows(metrics):
        table.add_row(*row)
    Console(stderr=True).print(table)
    print(json.dumps(metrics, indent=2))
    return 0


def _cmd_chat(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext chat",
        description='Ask about audio: afnext chat --checkpoint DIR --audio FILE "question". '
        "The answer is streamed; --think also shows the <think> reasoning.",
    )
    parser.add_argument("question", help="the question (a <sound> placeholder is added if missing)")
    parser.add_argument(
        "--checkpoint", required=True, help="run, stage or model folder (afnext or HF)"
    )
    parser.add_argument(
        "--audio", action="append", default=[], help="audio file (repeat for several)"
    )
    parser.add_argument("--think", action="store_true", help="show the <think> reasoning")
    parser.add_argument("--system", default=None, help="system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    args = parser.parse_args(argv)
    if not args.audio:
        parser.error("give at least one --audio FILE")
    from afnext.evaluation.chat import chat

    chat(
        args.checkpoint,
        args.audio,
        args.question,
        think=args.think,
        system=args.system,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
    )
    return 0


def _cmd_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext demo",
        description="CPU demo: build synthetic scenes, train experiment=tiny from scratch, print held-out "
        "accuracy against chance, answer one question. Last line: accuracy=A chance=C.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides on top of experiment=tiny")
    args = parser.parse_args(argv)
    from afnext.training.demo import run_demo

    cfg = compose_config("train", ["experiment=tiny", *args.overrides])
    result = run_demo(cfg, _compose_build)
    print(f"accuracy={result['accuracy']:.3f} chance={result['chance']:.3f}")
    return 0


def _cmd_eval(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext eval",
        description="Evaluation. `afnext eval score benchmark=mmau predictions=FILE.json --json` scores a "
        "predictions file without a model: the benchmark's own file with each model output in the field its "
        "official script reads (MMAU: model_output; MMAR: answer_prediction, JSONL), or an {id, prediction} "
        "file with benchmark.root=DIR. Benchmarks: conf/benchmark/.",
    )
    parser.add_argument("action", choices=["score"], help="what to do")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides: benchmark=NAME predictions=PATH"
    )
    args = parser.parse_intermixed_args(argv)
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from afnext.evaluation.benchmarks.score import result_tables, score_file

    cfg = compose_config("eval", args.overrides)
    if not cfg.get("predictions"):
        raise ConfigError("afnext eval score needs predictions=FILE (a predictions file to score)")
    if OmegaConf.is_missing(cfg.benchmark, "root"):
        cfg.benchmark.root = None  # not needed to score a file in the benchmark's own format
    benchmark = instantiate(cfg.benchmark, _convert_="all")
    result = score_file(benchmark, cfg.predictions)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    for table in result_tables(result):
        console.print(table)
    return 0


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "train": (
        _cmd_train,
        "train (Hydra overrides, -m sweeps, curricula): afnext train experiment=tiny",
    ),
    "validate": (_cmd_validate, "validation loss / accuracy of a saved model"),
    "chat": (_cmd_chat, 'ask about audio: afnext chat --checkpoint DIR --audio FILE "question"'),
    "demo": (_cmd_demo, "CPU demo: data, training, held-out accuracy, one chat answer"),
    "config": (_cmd_config, "print the composed config"),
    "info": (_cmd_info, "build a model on the meta device and print parameter counts per part"),
    "data": (_cmd_data, "build datasets (TACoT data engine): afnext data build ..."),
    "eval": (
        _cmd_eval,
        "score predictions: afnext eval score benchmark=mmau predictions=FILE --json",
    ),
}


def _usage() -> str:
    lines = ["usage: afnext <command> [overrides ...] [--help]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "config groups (pick with group=option):"]
    for group, options in config_groups().items():
        lines.append(f"  {group:<28} {', '.join(options)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``afnext`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"afnext: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command][0](rest)
    except Exception as exc:
        cause = _afnext_cause(exc)
        if cause is None:
            raise
        print(f"afnext {command}: error: {cause}", file=sys.stderr)
        return 1


def _afnext_cause(exc: BaseException) -> AfnextError | None:
    """The AfnextError behind ``exc``: itself, or the one Hydra's ``instantiate`` wrapped in an
    ``InstantiationException`` (possibly several levels deep); ``None`` for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AfnextError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


if __name__ == "__main__":
    sys.exit(main())
