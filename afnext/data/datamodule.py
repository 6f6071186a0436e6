"""``AudioDataModule``: manifests -> datasets -> bucketed, mixed, resumable DataLoaders for Lightning.

The processor comes from the model, so it is attached after construction
(``datamodule.attach_processor(processor)``, which afnext's LightningModule does). Decoding and features run
in DataLoader worker processes (``num_workers``); the main process sees every collated batch in
:meth:`AudioDataModule.on_before_batch_transfer`, where it counts skipped samples by reason (the first
``max_errors_printed`` are logged with ``file:line``) and advances the train sampler's resume position.

Trainer settings this module expects: ``use_distributed_sampler=False`` (the batch sampler shards over ranks
itself); the training step should do nothing for a batch with ``num_samples == 0`` (every sample skipped).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from afnext.data.collate import Batch, Collator
from afnext.data.dataset import ManifestDataset
from afnext.data.sampler import DurationBucketBatchSampler, WeightedMixtureSampler
from afnext.errors import ConfigError

__all__ = ["AudioDataModule", "ManifestSpec", "ResumableDataLoader"]

log = logging.getLogger(__name__)

ManifestSpec = str | os.PathLike | Mapping[str, Any]
"""A manifest in a split's list: a path, or ``{"path": ..., "weight": 1.0}``."""

SPLITS = ("train", "val", "test")


def _parse_specs(value: Any, key: str) -> list[tuple[str, float]]:
    """``(path, weight)`` per manifest of a split's config value."""
    if value is None:
        return []
    items = [value] if isinstance(value, (str, os.PathLike, Mapping)) else list(value)
    specs: list[tuple[str, float]] = []
    for k, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            specs.append((os.fspath(item), 1.0))
        elif isinstance(item, Mapping) and item.get("path"):
            unknown = set(item) - {"path", "weight"}
            if unknown:
                raise ConfigError(
                    f"data.{key}[{k}] has unknown keys {sorted(unknown)}; use path and weight"
                )
            specs.append((os.fspath(item["path"]), float(item.get("weight", 1.0))))
        else:
            raise ConfigError(
                f"data.{key}[{k}] must be a manifest path or {{path: ..., weight: ...}}, got {item!r}"
            )
    return specs


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position is its batch sampler's (Lightning's stateful-dataloader protocol, so a
    mid-epoch checkpoint resumes with the next batch instead of warning that the loader is not resumable)."""

    def state_dict(self) -> dict[str, Any]:
        """The batch sampler's ``{"epoch", "position", "seed"}``."""
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue after the batches ``state_dict`` says were consumed."""
        self.batch_sampler.load_state_dict(state_dict)


class AudioDataModule(pl.LightningDataModule):
    """Train / val / test data from AF3-style manifests.

    Args:
        train: Training manifests: a path, or a list of paths / ``{path, weight}`` (several: a weighted mixture).
        val: Validation manifests (weights ignored; every sample once).
        test: Test manifests (weights ignored).
        batch_size: Most samples per batch (``None``: only ``max_batch_seconds`` caps).
        max_batch_seconds: Most seconds of audio per batch (``None``: only ``batch_size`` caps).
        num_workers: DataLoader worker processes (0: load in the main process).
        on_error: ``skip`` (count and log bad samples) or ``raise`` (stop with an error naming ``file:line``).
        max_errors_printed: How many skipped samples are logged with file, line and reason.
        max_audio_seconds: Longest audio per sample (longer ones are bad samples).
        max_length: Most tokens per sample, and the row length when packing.
        pack: Pack training samples into rows of ``max_length`` tokens (``position_ids`` restart per sample; the
            model keeps them apart, see ``afnext.llms.packing``). Validation and test batches are never packed.
        max_windows_per_batch: Most audio windows (30 s encoder inputs) per batch, the encoder's cost unit;
            ``None``: no cap.
        balance_work: With several data-parallel ranks, give the ranks of each step batches of similar estimated
            work (:mod:`afnext.data.cost`; needs the model's sizes, see :meth:`attach_processor`). ``False``: each
            rank takes every N-th batch of the shuffled order, so a step's batches are those one process
            accumulating N batches would see (for comparisons against one process).
        seed: Seeds shuffling and mixture draws (with the epoch).
        num_buckets: Duration buckets per epoch.
        samples_per_epoch: Training samples drawn per epoch from a mixture (default: all samples' count).
        eval_batch_size: Batch size for val / test (default: ``batch_size``).
        pin_memory: Pin batches in page-locked memory (GPU training).
        persistent_workers: Keep workers alive between epochs.
        resample_backend: How audio at other rates is resampled (``soxr`` or ``torchaudio``); given to the
            processor by :meth:`attach_processor`.
    """

    def __init__(
        self,
        train: ManifestSpec | Sequence[ManifestSpec] | None = None,
        val: ManifestSpec | Sequence[ManifestSpec] | None = None,
        test: ManifestSpec | Sequence[ManifestSpec] | None = None,
        *,
        batch_size: int | None = 8,
        max_batch_seconds: float | None = None,
        num_workers: int = 0,
        on_error: str = "skip",
        max_errors_printed: int = 10,
        max_audio_seconds: float | None = None,
        max_length: int | None = None,
        pack: bool = False,
        max_windows_per_batch: int | None = None,
        balance_work: bool = True,
        seed: int = 0,
        num_buckets: int = 10,
        samples_per_epoch: int | None = None,
        eval_batch_size: int | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        resample_backend: str = "soxr",
    ) -> None:
        super().__init__()
        if on_error not in ("skip", "raise"):
            raise ConfigError(f"data.on_error={on_error!r}; use 'skip' or 'raise'")
        if pack and not max_length:
            raise ConfigError("data.pack=true needs data.max_length (the length of a packed row)")
        from afnext.audio.resample import check_resample_backend

        check_resample_backend(resample_backend, "data.resample_backend")
        if batch_size is None and max_batch_seconds is None:
            raise ConfigError("set data.batch_size and/or data.max_batch_seconds to cap a batch")
        self.specs = {
            "train": _parse_specs(train, "train"),
            "val": _parse_specs(val, "val"),
            "test": _parse_specs(test, "test"),
        }
        self.batch_size, self.max_batch_seconds = batch_size, max_batch_seconds
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = int(num_workers)
        self.on_error = on_error
        self.max_errors_printed = int(max_errors_printed)
        self.max_audio_seconds, self.max_length = max_audio_seconds, max_length
        self.pack, self.seed = pack, int(seed)
        if max_windows_per_batch is not None and int(max_windows_per_batch) < 1:
            raise ConfigError(
                f"data.max_windows_per_batch={max_windows_per_batch} must be a positive number of windows"
            )
        self.max_windows_per_batch = max_windows_per_batch
        self.balance_work = bool(balance_work)
        self.num_buckets, self.samples_per_epoch = num_buckets, samples_per_epoch
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.resample_backend = resample_backend
        self.processor: Any | None = None
        self.dims: Any | None = None
        self.datasets: dict[str, ManifestDataset] = {}
        self.skipped: dict[str, Counter[str]] = {}
        self._printed = 0
        self._train_sampler: DurationBucketBatchSampler | None = None
        self._pending_sampler_state: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------------------------
    # Set-up
    # ----------------------------------------------------------------------------------------------
    def attach_processor(self, processor: Any, dims: Any = None) -> None:
        """Use the model's :class:`~afnext.data.processor.AudioProcessor` (right padding is used for batches),
        resampling with ``data.resample_backend``; with the model's :class:`~afnext.data.cost.ModelDims`, training
        batches are balanced over data-parallel ranks by their estimated work."""
        processor.resample_backend = self.resample_backend
        self.processor = processor
        self.dims = dims
        for dataset in self.datasets.values():
            dataset.processor = processor

    def dataset(self, split: str) -> ManifestDataset:
        """The dataset of ``split`` (``train`` / ``val`` / ``test``), built on first use.

        Raises:
            ConfigError: The split has no manifests in the config.
        """
        if split not in self.datasets:
            if not self.specs.get(split):
                raise ConfigError(
                    f"data.{split} lists no manifests; set data.{split}=[path.jsonl, ...]"
                )
            self.datasets[split] = ManifestDataset(
                [path for path, _ in self.specs[split]],
                self.processor,
                on_error=self.on_error,
                max_audio_seconds=self.max_audio_seconds,
                max_length=self.max_length,
            )
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Read the manifests the stage needs (``fit``: train and val; ``validate``; ``test``; None: all)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "", SPLITS
        )
        for split in wanted:
            if self.specs[split]:
                self.dataset(split)

    def _world(self) -> tuple[int, int]:
        """``(replicas, rank)`` of the data-parallel dimension: batches are sharded over it only (ranks that
        share one sequence in sequence parallelism get the same batches)."""
        trainer = self.trainer
        if trainer is not None:
            kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None)
            if kwargs:
                return int(kwargs["num_replicas"]), int(kwargs["rank"])
            return trainer.world_size, trainer.global_rank
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _loader(
        self,
        dataset: ManifestDataset,
        batch_sampler: DurationBucketBatchSampler,
        cls: type[DataLoader] = DataLoader,
        pack: bool = False,
    ) -> DataLoader:
        if self.processor is None:
            raise ConfigError(
                "AudioDataModule has no processor; call datamodule.attach_processor(processor) (the "
                "LightningModule does it with its model's processor) before asking for dataloaders"
            )
        collator = Collator(self.processor.pad_token_id, pack=pack, max_length=self.max_length)
        return cls(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=collator,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> ResumableDataLoader:
        """Bucketed (and, with several manifests, weight-mixed) batches for this rank, resumable."""
        dataset = self.dataset("train")
        weights = [w for _, w in self.specs["train"]]
        mixture = None
        if len(weights) > 1 or self.samples_per_epoch is not None:
            mixture = WeightedMixtureSampler(
                dataset.group_sizes, weights, num_samples=self.samples_per_epoch, seed=self.seed
            )
        replicas, rank = self._world()
        sampler = DurationBucketBatchSampler(
            dataset.durations,
            batch_size=self.batch_size,
            max_batch_seconds=self.max_batch_seconds,
            num_buckets=self.num_buckets,
            shuffle=True,
            seed=self.seed,
            num_replicas=replicas,
            rank=rank,
            mixture=mixture,
            windows=self._windows(dataset),
            max_windows=self.max_windows_per_batch,
            cost=self._cost(dataset),
        )
        # Workers and Lightning prefetch: record() advances the position per batch the main process gets.
        sampler.count_on_yield = False
        if self._pending_sampler_state is not None:
            sampler.load_state_dict(self._pending_sampler_state)
            self._pending_sampler_state = None
        self._train_sampler = sampler
        loader = self._loader(dataset, sampler, ResumableDataLoader, pack=self.pack)
        assert isinstance(loader, ResumableDataLoader)
        return loader

    def _cost(self, dataset: ManifestDataset) -> Any:
        """``batch -> estimated work`` from the samples' durations (None without the model's sizes)."""
        if self.dims is None or not self.balance_work:
            return None
        from afnext.data.cost import step_flops

        dims, durations = self.dims, dataset.durations
        tokens = [dims.tokens_for_seconds(d) for d in durations]
        windows = [dims.windows_for_seconds(d) if d > 0 else 0 for d in durations]

        def cost(batch: list[int]) -> float:
            return step_flops(dims, [tokens[i] for i in batch], sum(windows[i] for i in batch))

        return cost

    def _windows(self, dataset: ManifestDataset) -> list[int] | None:
        if self.max_windows_per_batch is None:
            return None
        return dataset.windows(float(getattr(self.processor, "window_seconds", 30.0)))

    def _eval_dataloader(self, split: str) -> DataLoader:
        # A plain (not stateful) DataLoader: validation always runs whole, never resumes mid-way. Batches hold
        # similar durations and come in an order whose every prefix spans the duration range, so a
        # limit_val_batches cut (and the answered batches) sees long audio as well as short.
        dataset = self.dataset(split)
        replicas, rank = self._world()
        sampler = DurationBucketBatchSampler(
            dataset.durations,
            batch_size=self.eval_batch_size,
            max_batch_seconds=self.max_batch_seconds,
            num_buckets=self.num_buckets,
            shuffle=False,
            seed=self.seed,
            num_replicas=replicas,
            rank=rank,
            windows=self._windows(dataset),
            max_windows=self.max_windows_per_batch,
            stratified=True,
        )
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader | list:
        """Every validation sample once (duration-stratified batch order, sharded over ranks, never packed);
        ``[]`` without val manifests (Lightning then skips validation)."""
        return self._eval_dataloader("val") if self.specs["val"] else []

    def test_dataloader(self) -> DataLoader | list:
        """Every test sample once (duration-stratified batch order, sharded over ranks, never packed); ``[]``
        without test manifests."""
        return self._eval_dataloader("test") if self.specs["test"] else []

    # ----------------------------------------------------------------------------------------------
    # Skips and position, seen in the main process
    # ----------------------------------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Lightning hook: record the batch's skips and, in training, one more consumed batch."""
        trainer = self.trainer
        stage = trainer.state.stage if trainer is not None else None
        self.record(batch, split=str(stage.value) if stage is not None else "train")
        return batch

    def record(self, batch: Batch, split: str = "train") -> None:
        """Count a collated batch's skipped samples; in ``train``, advance the resume position by one batch.

        Call it for every batch when iterating the dataloaders without Lightning.
        """
        counts = self.skipped.setdefault(split, Counter())
        for item in batch.get("skipped", ()):
            counts[item.reason] += 1
            if self._printed < self.max_errors_printed:
                self._printed += 1
                log.warning(
                    "skipped sample %s (%s, %s): %s", item.where, split, item.reason, item.message
                )
                if self._printed == self.max_errors_printed:
                    log.warning(
                        "further skipped samples are counted but not printed (data.max_errors_printed=%d)",
                        self.max_errors_printed,
                    )
        if split == "train" and self._train_sampler is not None:
            self._train_sampler.advance()

    def skipped_counts(self, split: str | None = "train") -> dict[str, int]:
        """Cumulative skipped samples by reason in ``split`` (``None``: all splits together)."""
        if split is not None:
            return dict(self.skipped.get(split, Counter()))
        total: Counter[str] = Counter()
        for counts in self.skipped.values():
            total.update(counts)
        return dict(total)

    # ----------------------------------------------------------------------------------------------
    # Lightning's stateful protocol (saved in checkpoints, restored before the dataloaders are built)
    # ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Train position (epoch, consumed batches, seed), skip counts, and how many skips were printed."""
        if self._train_sampler is not None:
            sampler_state = self._train_sampler.state_dict()
        else:
            sampler_state = self._pending_sampler_state
        return {
            "train_sampler": sampler_state,
            "skipped": {split: dict(c) for split, c in self.skipped.items()},
            "printed": self._printed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`: the next train iteration starts after the last consumed batch."""
        self.skipped = {split: Counter(c) for split, c in state_dict.get("skipped", {}).items()}
        self._printed = int(state_dict.get("printed", 0))
        sampler_state = state_dict.get("train_sampler")
        if sampler_state is None:
            return
        if self._train_sampler is not None:
            self._train_sampler.load_state_dict(sampler_state)
        else:
            self._pending_sampler_state = dict(sampler_state)
