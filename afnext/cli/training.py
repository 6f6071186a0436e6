"""``afnext train``, ``validate``, ``plan``, ``info``, ``config``, ``data`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from afnext.config import build_on_meta, compose_config, expand_sweeps


def print_config(cfg: Any) -> None:
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
        print_config(cfg)
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


def _cmd_plan(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="afnext plan",
        description="Memory per GPU of each curriculum stage of a training config (the model built on the meta "
        "device, no weights): parameters, gradients, optimizer state, activations, attention and loss workspace, "
        "encoder activations, the verdict against the GPU's memory, the longest audio that fits and the smallest "
        "sequence-parallel degree that fits. Takes the same overrides as afnext train. Example: afnext plan "
        "experiment=afnext_instruct trainer.devices=8 trainer.num_nodes=16",
    )
    parser.add_argument("--gpu-memory", default="80GiB", help="memory of one GPU (default 80GiB)")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead of a table"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    args = parser.parse_args(argv)
    from afnext.training.plan import parse_bytes, plan_run, plan_table

    gpu = parse_bytes(args.gpu_memory)
    plans = plan_run(compose_config("train", args.overrides), gpu)
    if args.json:
        print(
            json.dumps({"gpu_memory_bytes": gpu, "stages": [p.to_dict() for p in plans]}, indent=2)
        )
        return 0
    from rich.console import Console

    console = Console()
    console.width = max(console.width, 160)  # the table's columns; piped output keeps them too
    console.print(plan_table(plans))
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
        print_config(compose_config("train", overrides))
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
