"""afnext.data: AF3-style manifests, the processor, datasets, collation, samplers and the LightningDataModule.

``AudioDataModule`` is imported lazily (it pulls in Lightning).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from afnext.data.collate import Batch, Collator
from afnext.data.dataset import ManifestDataset, Sample, Skipped
from afnext.data.manifest import (
    ManifestEntry,
    ManifestProblem,
    ManifestRecord,
    load_manifest,
    parse_record,
    read_manifest,
)
from afnext.data.processor import IGNORE_INDEX, AudioProcessor
from afnext.data.sampler import DurationBucketBatchSampler, WeightedMixtureSampler

if TYPE_CHECKING:
    from afnext.data.datamodule import AudioDataModule

__all__ = [
    "IGNORE_INDEX",
    "AudioDataModule",
    "AudioProcessor",
    "Batch",
    "Collator",
    "DurationBucketBatchSampler",
    "ManifestDataset",
    "ManifestEntry",
    "ManifestProblem",
    "ManifestRecord",
    "Sample",
    "Skipped",
    "WeightedMixtureSampler",
    "load_manifest",
    "parse_record",
    "read_manifest",
]


def __getattr__(name: str) -> Any:
    if name == "AudioDataModule":
        from afnext.data.datamodule import AudioDataModule

        return AudioDataModule
    raise AttributeError(f"module 'afnext.data' has no attribute {name!r}")
