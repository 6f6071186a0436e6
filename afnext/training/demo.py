"""The CPU demo (``make demo`` / ``afnext demo``): data, training, held-out accuracy, one chat answer.

1. Builds the synthetic TACoT scene dataset once (``experiment=tiny``'s ``demo.build`` overrides of
   ``afnext data build``) into ``${paths.data_dir}/tiny_scenes`` and reuses it afterwards.
2. Trains the tiny model of ``experiment=tiny`` from scratch (W&B offline run and checkpoints in the run
   folder).
3. Answers the held-out test questions and prints accuracy against chance, per question type.
4. Answers one test question through the same path as ``afnext chat``.

The last line printed is ``accuracy=A chance=C``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["build_demo_data", "ensure_demo_data", "run_demo"]

console = Console(stderr=True)


ComposeBuild = Callable[[list[str]], Any]
"""Composes ``afnext data build``'s config from overrides (the caller's ``afnext.config.compose_config``)."""


def build_demo_data(cfg: Any, compose_build: ComposeBuild) -> Path:
    """The demo's dataset folder, built with ``cfg.demo.build`` overrides if it is not there yet.

    Args:
        cfg: The composed training config (``experiment=tiny``: its ``demo`` block).
        compose_build: Composes the data-build config from overrides.
    """
    from hydra.utils import instantiate

    from afnext.storage import write_json

    out = Path(cfg.paths.data_dir) / str(cfg.demo.dataset)
    wanted = [*cfg.demo.build, f"out={out}"]
    overrides = list(wanted)
    # The overrides a build used are kept beside it: the same ones resume / reuse it (the builder skips
    # finished shards), other ones (an older afnext's demo) rebuild it.
    recorded = out / "demo_build.json"
    used = json.loads(recorded.read_text()).get("build") if recorded.is_file() else None
    if used == wanted:
        console.print(f"[green]demo data:[/] {out} (built earlier)")
    elif (out / "build.json").is_file():
        console.print(f"[yellow]demo data in {out} was built with other settings: rebuilding it[/]")
        overrides.append("overwrite=true")
    else:
        console.print(f"[cyan]building demo data[/] afnext data build {' '.join(overrides)}")
    instantiate(compose_build(overrides).build, _convert_="all")
    write_json(recorded, {"build": wanted})
    return out


def _manifest_paths(data: Any) -> list[Path]:
    paths = []
    for split in ("train", "val", "test"):
        value = data.get(split)
        items = [] if value is None else [value] if isinstance(value, (str, dict)) else list(value)
        for item in items:
            path = item.get("path") if hasattr(item, "get") else item
            if path:
                paths.append(Path(str(path)))
    return paths


def ensure_demo_data(
    cfg: Any, compose_build: ComposeBuild, *, wait_seconds: float = 3600.0
) -> Path | None:
    """Build an experiment's synthetic data on first use (``afnext train experiment=tiny`` on a fresh checkout).

    Only when the experiment has a ``demo.build`` recipe and some configured manifest lies in its dataset folder
    and is missing; global rank 0 builds, the other ranks wait for the manifests.

    Returns:
        The dataset folder when it was built or waited for, else None.
    """
    from lightning.pytorch.utilities import rank_zero_only

    demo = cfg.get("demo")
    if not demo or not demo.get("build"):
        return None
    out = (Path(cfg.paths.data_dir) / str(demo.dataset)).resolve()
    wanted = [p for p in _manifest_paths(cfg.data) if p.resolve().is_relative_to(out)]
    if not wanted or all(p.is_file() for p in wanted):
        return None
    if rank_zero_only.rank == 0:
        return build_demo_data(cfg, compose_build)
    deadline = time.monotonic() + wait_seconds
    while not all(p.is_file() for p in wanted):
        if time.monotonic() > deadline:
            from afnext.errors import DataError

            raise DataError(f"rank {rank_zero_only.rank}: {out} was not built by rank 0 in time")
        time.sleep(1.0)
    return out


def run_demo(cfg: Any, compose_build: ComposeBuild) -> dict[str, Any]:
    """Run the whole demo; returns accuracy, chance, timings and the run folder.

    Args:
        cfg: The composed training config (``experiment=tiny`` and overrides).
        compose_build: Composes the data-build config from overrides.
    """
    from afnext.evaluation.chat import chat, load_for_chat
    from afnext.evaluation.qa import evaluate_manifest, read_qa_manifest
    from afnext.training.run import train

    start = time.perf_counter()
    data = build_demo_data(cfg, compose_build)
    built = time.perf_counter()
    final = train(cfg)
    trained = time.perf_counter()

    model, processor = load_for_chat(final)
    result = evaluate_manifest(
        model,
        data / "test.jsonl",
        processor=processor,
        batch_size=int(cfg.demo.eval_batch_size),
        max_new_tokens=int(cfg.demo.max_new_tokens),
        limit=cfg.demo.get("eval_limit"),
    )
    evaluated = time.perf_counter()
    table = Table(title=f"held-out test questions ({result.count})")
    table.add_column("question type")
    table.add_column("accuracy", justify="right")
    for kind, acc in result.by_type.items():
        table.add_row(kind, f"{acc:.3f}")
    table.add_row("all", f"{result.accuracy:.3f}")
    console.print(table)
    run_dir = Path(cfg.paths.run_dir)
    (run_dir / "test_predictions.jsonl").write_text(
        "".join(json.dumps(p) + "\n" for p in result.predictions)
    )

    row = read_qa_manifest(data / "test.jsonl", limit=1)[0]
    question = row["messages"][-1]["content"]
    console.rule("afnext chat")
    console.print(
        f"$ afnext chat --checkpoint {run_dir} --audio {row['sounds'][0]} {question!r}",
        highlight=False,
    )
    chat((model, processor), row["sounds"], question, max_new_tokens=int(cfg.demo.max_new_tokens))
    console.print(f"reference: {row['reference']}")
    timings = {
        "data_s": round(built - start, 1),
        "train_s": round(trained - built, 1),
        "eval_s": round(evaluated - trained, 1),
        "total_s": round(time.perf_counter() - start, 1),
    }
    console.print(f"run folder: {run_dir}  model: {final}  timings: {timings}")
    return {
        "accuracy": result.accuracy,
        "chance": result.chance,
        "by_type": result.by_type,
        "run_dir": str(run_dir),
        "model": str(final),
        **timings,
    }
