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
from pathlib import Path
from typing import Any

from afnext.errors import AfnextError, ConfigError
from afnext.plugins import afnext_conf_dir, discover_plugins

__all__ = ["COMMANDS", "compose_config", "config_groups", "main"]


def _search_dirs(subdir: str | None) -> list[Path]:
    """Config folders after the primary one: afnext's ``conf/<subdir>`` then each plugin's."""
    dirs: list[Path] = []
    if subdir:
        dirs.append(afnext_conf_dir() / subdir)
    for plugin in discover_plugins():
        if plugin.conf_dir is None:
            continue
        dirs.append(plugin.conf_dir)
        if subdir and (plugin.conf_dir / subdir).is_dir():
            dirs.append(plugin.conf_dir / subdir)
    return dirs


def compose_config(
    config_name: str, overrides: Sequence[str] = (), *, subdir: str | None = None
) -> Any:
    """Compose ``conf/<config_name>.yaml`` with overrides, afnext's and the plugins' config folders searched.

    Args:
        config_name: Primary config in afnext's ``conf/``.
        overrides: Hydra overrides (``encoder=whisper_large_v3``, ``trainer.max_steps=10``, ...).
        subdir: A sub-folder of ``conf/`` (and of each plugin's ``conf/``) whose groups are also top-level
            groups for this command (``reasoning`` for ``afnext data build``, so ``generator=template``).

    Returns:
        The composed ``DictConfig``.

    Raises:
        ConfigError: The overrides do not compose; the message is Hydra's, which names the key.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from omegaconf.errors import OmegaConfBaseException

    extra = [f"file://{d}" for d in _search_dirs(subdir)]
    all_overrides = list(overrides)
    if extra:
        all_overrides.append("hydra.searchpath=[" + ",".join(extra) + "]")
    # Inside a running Hydra application (``afnext train`` building its data on first use) Hydra is already
    # initialised: compose beside it and put the application's state back afterwards.
    outer = get_gh_backup() if GlobalHydra.instance().is_initialized() else None
    if outer is not None:
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(afnext_conf_dir()), version_base="1.3"):
            return compose(config_name=config_name, overrides=all_overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(
            f"could not compose config {config_name!r} with {list(overrides)}: {exc}"
        ) from exc
    finally:
        if outer is not None:
            restore_gh_from_backup(outer)


def config_groups(subdir: str | None = None) -> dict[str, list[str]]:
    """Config groups and their options, afnext's and the plugins'.

    Args:
        subdir: Also list the groups under this sub-folder (see :func:`compose_config`).

    Returns:
        ``{group: sorted option names}``; nested groups are named with ``/``.
    """
    roots = [afnext_conf_dir(), *_search_dirs(subdir)]
    groups: dict[str, set[str]] = {}
    for root in roots:
        for yaml_file in root.rglob("*.yaml"):
            rel = yaml_file.relative_to(root)
            if len(rel.parts) < 2:
                continue
            groups.setdefault("/".join(rel.parts[:-1]), set()).add(yaml_file.stem)
    return {group: sorted(options) for group, options in sorted(groups.items())}


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


def build_on_meta(cfg: Any) -> Any:
    """Instantiate ``cfg.model`` with every parameter on the ``meta`` device (no memory, no init)."""
    import torch
    from hydra.utils import instantiate

    with torch.device("meta"):
        return instantiate(cfg.model, _convert_="all")


def _cmd_info(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext info",
        description="Compose a model config, build it on the meta device and print parameter counts "
        "per part (encoder, time embedding, connector, LLM, LoRA), trainable and total. "
        "Example: afnext info preset=afnext",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args(argv)
    cfg = compose_config("info", args.overrides)
    model = build_on_meta(cfg)
    counts = model.parameter_counts()
    classes = {
        "encoder": type(model.encoder).__name__,
        "time_embedding": type(model.time_embedding).__name__ if model.time_embedding else "none",
        "connector": type(model.connector).__name__,
        "llm": f"{type(model.llm).__name__}({type(model.llm.base).__name__})",
        "lora": "peft LoRA" if getattr(model.llm, "has_lora", False) else "none",
        "all": type(model).__name__,
    }
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


RELAUNCH_ENV = "AFNEXT_RELAUNCH_COMMAND"
"""Set while a Hydra command runs. Lightning's DDP launcher starts each extra rank by re-running the script
(``afnext`` or ``python -m afnext.cli``) with the overrides only; this names the command they belong to."""


def _hydra_app(config_name: str, argv: list[str], task: Callable[[Any], Any]) -> int:
    """Run ``task(cfg)`` as a real Hydra application: run folders, ``-m`` multirun sweeps, ``--cfg``,
    ``--help``, with afnext's and the plugins' config folders on the search path."""
    import hydra

    args = list(argv)
    extra = [f"file://{d}" for d in _search_dirs(None)]
    if extra and not any(a.startswith("hydra.searchpath") for a in args):
        args.append("hydra.searchpath=[" + ",".join(extra) + "]")
    if not any(a.startswith("hydra.job.name") for a in args):
        args.append(f"hydra.job.name={config_name}")
    saved, saved_env = sys.argv, os.environ.get(RELAUNCH_ENV)
    sys.argv = [saved[0] if saved else "afnext", *args]  # Hydra parses the overrides from sys.argv
    os.environ[RELAUNCH_ENV] = config_name

    @hydra.main(config_path=str(afnext_conf_dir()), config_name=config_name, version_base="1.3")
    def _app(cfg: Any) -> None:
        task(cfg)

    try:
        _app()
    finally:
        sys.argv = saved
        if saved_env is None:
            os.environ.pop(RELAUNCH_ENV, None)
        else:
            os.environ[RELAUNCH_ENV] = saved_env
    return 0


def _cmd_train(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: afnext train [group=option ...] [key=value ...] [-m sweep=a,b] [--cfg job]\n\n"
            "Train with the composed config (conf/train.yaml). Examples:\n"
            "  afnext train experiment=tiny trainer.max_steps=50\n"
            "  afnext train encoder=whisper_large_v3 connector=mlp llm=qwen2_5_7b curriculum=afnext\n"
            "  afnext train curriculum=afnext +stage=midtrain2 init_from=RUN_DIR\n"
            "  afnext train experiment=tiny -m optim.lr.default=1e-4,3e-4\n"
            "Rerun with the same run_name=NAME to resume. Hydra's own help: afnext train --hydra-help\n"
        )
        return 0
    from afnext.training.run import train

    return _hydra_app("train", argv, train)


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

    result = run_demo(args.overrides)
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
    relaunched = os.environ.get(RELAUNCH_ENV)
    if command not in COMMANDS and "=" in command and relaunched in COMMANDS:
        # A DDP rank that Lightning started with the overrides only.
        command, rest = relaunched, args
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
