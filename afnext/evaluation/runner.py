"""``afnext eval``: answer benchmarks with a model on one or several devices, then score.

Lightning runs the loop (``Trainer.predict`` with a :class:`EvalModule` whose ``predict_step`` runs the inference
engine), so ``trainer.devices=N`` / ``num_nodes`` / SLURM work as in training; each process takes every
``world``-th batch of one shared plan (:mod:`afnext.evaluation.predict`). Answers are appended to each
benchmark's predictions file as they finish (:mod:`afnext.evaluation.store`): rerunning the same command resumes
where a killed run stopped. At the end global rank 0 merges the files, scores every benchmark with its adapter
and writes ``results.json`` and ``results.md`` (and, with a W&B logger, the scores and a table with playable
audio). Audio files that are missing or unreadable are listed and counted in the results; their items get no
answer and are scored as skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from rich.console import Console

from afnext.evaluation.benchmarks.base import Benchmark, BenchmarkItem
from afnext.evaluation.predict import (
    PlannedBatch,
    answer_items,
    plan_items,
    prepare_batch,
    result_line,
)
from afnext.evaluation.report import (
    benchmark_result,
    log_to_logger,
    write_official_file,
    write_reports,
)
from afnext.evaluation.store import PredictionStore
from afnext.inference.engine import InferenceEngine, load_engine
from afnext.inference.generation import GenerationSettings

__all__ = ["EvalModule", "SampleProgress", "eval_dir", "run_evaluation", "run_from_config"]

console = Console(stderr=True)


class _Batches:
    """A rank's planned batches; loading one encodes its items (in a data-loader worker when there are any)."""

    def __init__(self, batches: list[PlannedBatch], engine: InferenceEngine) -> None:
        self.batches = batches
        self.engine = engine

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> PlannedBatch:
        return prepare_batch(self.engine, self.batches[index])


def _identity(batch: Any) -> Any:
    return batch


class EvalModule(pl.LightningModule):
    """Runs planned batches through the engine and appends each answer to its benchmark's predictions file.

    Args:
        engine: The inference engine (its model is this module's ``model``, moved to the device by Lightning).
        plan: Every batch of the evaluation, for all processes (each takes every ``world``-th one).
        stores: Predictions folder per benchmark name.
        num_workers: Data-loader workers that read audio ahead of the model.
    """

    def __init__(
        self,
        engine: InferenceEngine,
        plan: list[PlannedBatch],
        stores: Mapping[str, PredictionStore],
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.model = engine.model
        self.engine = engine
        self.plan = plan
        self.stores = dict(stores)
        self.num_workers = num_workers

    def shard(self) -> list[PlannedBatch]:
        """This process's batches (an empty placeholder when the plan has fewer batches than processes:
        Lightning refuses a data loader without batches)."""
        mine = self.plan[self.global_rank :: self.trainer.world_size]
        return mine or [PlannedBatch("", [], self.plan[0].settings)]

    def predict_dataloader(self) -> Any:
        from torch.utils.data import DataLoader

        for store in self.stores.values():
            store.rank = self.global_rank
        return DataLoader(
            _Batches(self.shard(), self.engine),  # type: ignore[arg-type]
            batch_size=None,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=_identity,
        )

    def transfer_batch_to_device(self, batch: Any, device: Any, dataloader_idx: int) -> Any:
        return batch  # the engine moves the padded tensors itself

    def predict_step(self, batch: PlannedBatch, batch_idx: int) -> int:
        if not batch.items:  # the placeholder of a process without batches
            return 0
        results = answer_items(self.engine, batch)
        self.stores[batch.task].append(result_line(r) for r in results)
        return len(results)

    def on_predict_end(self) -> None:
        for store in self.stores.values():
            store.close()


class SampleProgress(pl.Callback):
    """A rich progress bar on global rank 0: its samples done, samples per second, elapsed time and ETA."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.task: Any = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: EvalModule) -> None:  # type: ignore[override]
        if trainer.global_rank != 0:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        total = sum(len(b) for b in pl_module.shard())
        where = f" (rank 0 of {trainer.world_size})" if trainer.world_size > 1 else ""
        self.progress = Progress(
            TextColumn("[bold]eval[/]" + where),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} samples/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task("eval", total=total, rate="-")
        self.start = time.perf_counter()
        self.done = 0
        self.progress.start()

    def on_predict_batch_end(  # type: ignore[override]
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: PlannedBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.progress is None:
            return
        self.done += len(batch)
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        self.progress.update(self.task, advance=len(batch), rate=f"{rate:.2f}")

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _primary() -> bool:
    """Whether this is the process a user started (not a rank Lightning or a launcher started beside it)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def run_evaluation(
    benchmarks: Mapping[str, Benchmark],
    *,
    out_dir: str | Path,
    checkpoint: str | Path | None = None,
    engine: InferenceEngine | None = None,
    generation: Mapping[str, Any] | None = None,
    max_batch_size: int = 32,
    token_budget: int = 65536,
    num_workers: int = 0,
    trainer: Mapping[str, Any] | None = None,
    dtype: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    judge: Any = None,
    logger: Any = None,
    table_rows: int = 200,
) -> dict[str, Any] | None:
    """Answer and score benchmarks; resumable (see the module docstring).

    Args:
        benchmarks: Adapters by name (each with its ``root``).
        out_dir: The evaluation's folder: ``<name>/predictions.jsonl`` per benchmark, ``results.json``,
            ``results.md``.
        checkpoint: Run, stage or model folder (loaded on every process); or give ``engine``.
        engine: An engine with a loaded model (in-process use: benchmarks, tests).
        generation: Settings that override every benchmark's own ``generation`` block (a preset of
            ``conf/generation/``); ``None``: each benchmark's own.
        max_batch_size: Most samples per ``generate`` call.
        token_budget: Most tokens per call (rows x (longest prompt + max_new_tokens)).
        num_workers: Data-loader workers that read audio ahead of the model.
        trainer: ``lightning.Trainer`` arguments (``accelerator``, ``devices``, ``num_nodes``, ``strategy``).
        dtype: Weights' dtype when loading ``checkpoint`` (``bfloat16``, ...).
        limit: Only the first ``limit`` items of each benchmark.
        overwrite: Remove earlier predictions in ``out_dir`` instead of resuming.
        judge: LLM judge for benchmarks scored by one.
        logger: A Lightning logger; a ``WandbLogger`` gets the scores and a table per benchmark.
        table_rows: Rows per W&B table.

    Returns:
        The results (``{"benchmarks": {name: scores}, ...}``) on global rank 0; ``None`` on other ranks.

    Raises:
        ConfigError: Neither ``checkpoint`` nor ``engine``, or earlier predictions made with other settings.
    """
    from afnext.errors import ConfigError

    if engine is None:
        if checkpoint is None:
            raise ConfigError("afnext eval needs checkpoint=RUN_OR_MODEL_FOLDER")
        engine = load_engine(
            checkpoint,
            device="cpu",  # Lightning moves it to the process's device
            dtype=dtype,
            max_batch_size=max_batch_size,
            token_budget=token_budget,
        )
    out = Path(out_dir)
    primary = _primary()
    tasks: dict[str, dict[str, Any]] = {}
    plan: list[PlannedBatch] = []
    for name, benchmark in benchmarks.items():
        items: list[BenchmarkItem] = benchmark.read()
        if limit is not None:
            items = items[: int(limit)]
        settings = GenerationSettings.from_mapping(
            benchmark.generation, generation, where=f"benchmark {name}.generation"
        )
        store = PredictionStore(out / name)
        store.check_settings(
            {
                "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
                "benchmark": repr(benchmark),
                "generation": settings.to_dict(),
                "limit": limit,
            },
            overwrite=overwrite,
            primary=primary,
        )
        missing = benchmark.missing_audio(items)
        absent = {m["id"] for m in missing}
        done = store.finished()
        pending = [i for i in items if i.id not in done and i.id not in absent]
        plan += plan_items(engine, name, pending, settings)
        tasks[name] = {"benchmark": benchmark, "items": items, "missing": missing, "store": store}
        tasks[name]["settings"] = settings
        tasks[name]["resumed"] = len(done & {i.id for i in items})
    start = time.perf_counter()
    rank = 0
    if plan:
        module = EvalModule(engine, plan, {k: v["store"] for k, v in tasks.items()}, num_workers)
        runner = pl.Trainer(
            **{"accelerator": "auto", "devices": 1, **dict(trainer or {})},
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=False,
            use_distributed_sampler=False,
            callbacks=[SampleProgress()],
            default_root_dir=str(out),
        )
        runner.predict(module, return_predictions=False)
        runner.strategy.barrier()
        rank = runner.global_rank
    if rank != 0:
        return None
    seconds = time.perf_counter() - start
    generated = sum(len(b) for b in plan)
    results: dict[str, Any] = {
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "out_dir": str(out),
        "benchmarks": {},
        "run": {
            "generated": generated,
            "seconds": round(seconds, 3),
            "samples_per_second": round(generated / seconds, 3)
            if generated and seconds > 0
            else None,
        },
    }
    tables = {}
    for name, task in tasks.items():
        lines = task["store"].compact([i.id for i in task["items"]])
        result = benchmark_result(
            task["benchmark"], task["items"], lines, task["missing"], judge=judge
        )
        result["generation"] = task["settings"].to_dict()
        result["resumed"] = task["resumed"]
        result["predictions_file"] = str(task["store"].folder / "predictions.jsonl")
        official = write_official_file(
            task["benchmark"], task["items"], lines, task["store"].folder
        )
        result["official_file"] = None if official is None else str(official)
        results["benchmarks"][name] = result
        tables[name] = (task["items"], lines)
    write_reports(results, out)
    if logger is not None:
        log_to_logger(logger, results, tables, rows=table_rows)
    return results


def eval_dir(
    checkpoint: str | Path, root_dir: str | Path, run_name: str | None, out_dir: str | Path | None
) -> Path:
    """Where an evaluation writes: ``out_dir``, else ``<root_dir>/evals/<run_name>``, else
    ``<root_dir>/evals/<checkpoint folder name>-<hash of its full path>`` (deterministic, so the same command
    resumes)."""
    import hashlib

    if out_dir:
        return Path(out_dir)
    if not run_name:
        path = Path(checkpoint).expanduser().resolve()
        run_name = f"{path.name}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    return Path(root_dir) / "evals" / str(run_name)


def run_from_config(
    benchmarks: Mapping[str, Benchmark],
    config: Mapping[str, Any],
    *,
    out_dir: str | Path,
    logger: Any = None,
    judge: Any = None,
) -> dict[str, Any] | None:
    """:func:`run_evaluation` with the settings of a composed ``conf/eval.yaml`` (as a plain dict)."""
    engine = config["engine"]
    return run_evaluation(
        benchmarks,
        out_dir=out_dir,
        checkpoint=config["checkpoint"],
        generation=config.get("generation"),
        max_batch_size=int(engine["max_batch_size"]),
        token_budget=int(engine["token_budget"]),
        num_workers=int(engine["num_workers"]),
        trainer=config["trainer"],
        dtype=config.get("dtype"),
        limit=config.get("limit"),
        overwrite=bool(config.get("overwrite")),
        judge=judge,
        logger=logger,
        table_rows=int(config.get("table_rows", 200)),
    )
