"""Lightning callbacks: checkpoints of a stage, skipped-sample accounting, validation prediction tables.

Each is a plain ``lightning.pytorch.Callback`` built from ``conf/callbacks/`` by Hydra.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from rich.console import Console

__all__ = ["PredictionTable", "SkippedSamples", "StageCheckpoint"]


class StageCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (best checkpoints by ``monitor`` at each validation, and ``last.ckpt``)
    that also writes ``last.ckpt`` every ``every_n_train_steps`` optimizer steps, so a killed run loses at most
    that many steps whatever the validation cadence. The best checkpoints are still chosen at validation only
    (the monitored metric exists only then).

    Args:
        every_n_train_steps: Steps between ``last.ckpt`` writes (None or 0: only at validation).
        **kwargs: ``ModelCheckpoint``'s (``dirpath``, ``monitor``, ``save_top_k``, ``save_last``, ...).
    """

    def __init__(self, *args, every_n_train_steps: int | None = None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("every_n_epochs", 1)
        super().__init__(*args, **kwargs)
        self.last_every_n_train_steps = int(every_n_train_steps or 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every, step = self.last_every_n_train_steps, trainer.global_step
        if not every or not self.save_last or step == 0 or step % every:
            return
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class SkippedSamples(pl.Callback):
    """Logs the samples the data pipeline skipped, by reason, and prints a summary when a stage ends.

    The datamodule (:class:`afnext.data.datamodule.AudioDataModule`, ``data.on_error=skip``) counts every
    skipped sample by reason and prints the first ``data.max_errors_printed`` with their ``file:line``; this
    callback logs its cumulative counts summed over all ranks (``train/skipped/<reason>``,
    ``train/skipped_samples``, and the same under ``validate/``, Lightning's name for the stage) and prints the
    totals at the end of training, so nothing is dropped silently.
    """

    def __init__(self) -> None:
        self._console = Console(stderr=True)

    @staticmethod
    def _counts(trainer: pl.Trainer, split: str) -> dict[str, int]:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "skipped_counts"):
            return {}
        return datamodule.skipped_counts(split)

    @staticmethod
    def _all_ranks(counts: dict[str, int]) -> dict[str, int]:
        """Counts summed over every rank (a collective: all ranks call it at the same step)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return counts
        gathered: list[dict[str, int] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, counts)
        total: dict[str, int] = {}
        for part in gathered:
            for reason, n in (part or {}).items():
                total[reason] = total.get(reason, 0) + int(n)
        return total

    def _log(self, trainer: pl.Trainer, split: str) -> None:
        counts = self._all_ranks(self._counts(trainer, split))
        if not counts:
            return
        metrics = {f"{split}/skipped/{reason}": float(n) for reason, n in counts.items()}
        metrics[f"{split}/skipped_samples"] = float(sum(counts.values()))
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        if (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0:
            self._log(trainer, "train")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # type: ignore[override]
        if not trainer.sanity_checking:
            self._log(trainer, "validate")

    def on_train_end(self, trainer, pl_module) -> None:  # type: ignore[override]
        self._log(trainer, "train")
        for split in ("train", "validate"):
            counts = self._all_ranks(self._counts(trainer, split))
            if counts and trainer.is_global_zero:
                self._console.print(
                    f"[yellow]skipped {split} samples:[/] {sum(counts.values())} {dict(sorted(counts.items()))}"
                )


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

                columns = [
                    "id",
                    "audio",
                    "question",
                    "prediction",
                    "reference",
                    "correct",
                    "seconds",
                ]
                data = [
                    [
                        r["id"],
                        wandb.Audio(r["sound"]) if r.get("sound") else None,
                        r["question"],
                        r["prediction"],
                        r["reference"],
                        r["correct"],
                        r.get("seconds"),
                    ]
                    for r in rows
                ]
                logger.log_table(
                    "val/predictions", columns=columns, data=data, step=trainer.global_step
                )
