"""Lightning callbacks: skipped-sample accounting, validation prediction tables, model export.

Each is a plain ``lightning.pytorch.Callback`` built from ``conf/callbacks/`` by Hydra.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from rich.console import Console

__all__ = ["PredictionTable", "SkippedSamples"]


class SkippedSamples(pl.Callback):
    """Counts the samples the data pipeline skipped, logs the counts by reason and prints the first few.

    Batches carry ``skipped``: a list of ``(where, reason)`` pairs (``where`` is ``file:line``) for the
    samples dropped while building them (``data.on_error=skip``). Nothing is dropped silently: every skip
    is counted here and the first ``print_first`` are printed with their file and line.

    Args:
        print_first: How many skip reasons to print in full.
    """

    def __init__(self, print_first: int = 10) -> None:
        self.print_first = print_first
        self.counts: Counter[str] = Counter()
        self.printed = 0
        self._console = Console(stderr=True)

    @staticmethod
    def _kind(reason: str) -> str:
        return reason.split(":", 1)[0].strip().replace(" ", "_")[:40] or "error"

    def _account(self, pl_module: pl.LightningModule, batch: Any, stage: str) -> None:
        skipped = batch.get("skipped") if isinstance(batch, dict) else None
        if not skipped:
            return
        for where, reason in skipped:
            self.counts[f"{stage}/{self._kind(reason)}"] += 1
            if self.printed < self.print_first:
                self._console.print(f"[yellow]skipped sample[/] {where}: {reason}")
                self.printed += 1
                if self.printed == self.print_first:
                    self._console.print(
                        f"[yellow]further skipped samples are counted, not printed "
                        f"(callbacks.skipped_samples.print_first={self.print_first})[/]"
                    )
        total = sum(v for k, v in self.counts.items() if k.startswith(f"{stage}/"))
        pl_module.log(f"{stage}/skipped_samples", float(total), reduce_fx="max")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # type: ignore[override]
        self._account(pl_module, batch, "train")

    def on_validation_batch_start(
        self, trainer, pl_module, batch, batch_idx, dataloader_idx=0
    ) -> None:  # type: ignore[override]
        self._account(pl_module, batch, "val")

    def on_train_end(self, trainer, pl_module) -> None:  # type: ignore[override]
        if self.counts:
            self._console.print(f"[yellow]skipped samples by reason:[/] {dict(self.counts)}")

    def state_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "printed": self.printed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.counts = Counter(state_dict.get("counts", {}))
        self.printed = int(state_dict.get("printed", 0))


class PredictionTable(pl.Callback):
    """After each validation, writes the answered samples (audio, question, prediction, reference).

    To W&B as a table with playable audio (``wandb.Audio``) when the logger is a ``WandbLogger``; always
    to ``<run>/predictions/step_<N>.jsonl``.

    Args:
        max_rows: Rows per table.
    """

    def __init__(self, max_rows: int = 32) -> None:
        self.max_rows = max_rows

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # type: ignore[override]
        rows = getattr(pl_module, "predictions", [])[: self.max_rows]
        if not rows or trainer.sanity_checking or not trainer.is_global_zero:
            return
        out = Path(trainer.default_root_dir) / "predictions" / f"step_{trainer.global_step}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                columns = ["id", "audio", "question", "prediction", "reference", "correct"]
                data = [
                    [
                        r["id"],
                        wandb.Audio(r["sound"]) if r.get("sound") else None,
                        r["question"],
                        r["prediction"],
                        r["reference"],
                        r["correct"],
                    ]
                    for r in rows
                ]
                logger.log_table(
                    "val/predictions", columns=columns, data=data, step=trainer.global_step
                )
