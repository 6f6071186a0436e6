"""Benchmark items through the inference engine: requests, the batch plan, answers.

``afnext eval`` (through Lightning, :mod:`afnext.evaluation.runner`) and the demo's held-out scoring
(:func:`afnext.evaluation.qa.evaluate_manifest`) both use these functions, so the same items with the same
settings form the same batches and get the same answers.

The plan is made once for all samples, before any audio is decoded: each item's prompt length is estimated
from its audio files' headers (:meth:`InferenceEngine.estimate_tokens`), and the engine groups items of similar
length within its caps. Several processes each take every ``world``-th batch of that one plan, so a batch holds
the same items whatever the number of processes (and greedy answers do not change with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from afnext.evaluation.benchmarks.base import BenchmarkItem
from afnext.inference.engine import InferenceEngine, Prepared, Request, Result
from afnext.inference.generation import GenerationSettings

__all__ = [
    "PlannedBatch",
    "answer_items",
    "audio_seconds",
    "item_request",
    "plan_items",
    "result_line",
]


@dataclass
class PlannedBatch:
    """Items of one benchmark that run in one ``generate`` call.

    Attributes:
        task: The benchmark's name (its predictions folder).
        items: The items, longest prompt first.
        settings: Their generation settings.
        prepared: Filled when the batch is loaded (a data-loader worker encodes the audio).
    """

    task: str
    items: list[BenchmarkItem]
    settings: GenerationSettings
    prepared: list[Prepared] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def item_request(item: BenchmarkItem, settings: GenerationSettings) -> Request:
    """The engine request for one benchmark item (its messages, its audio files in order)."""
    return Request(
        messages=[dict(m) for m in item.messages],
        audio=[str(p) for p in item.audio],
        settings=settings,
        id=item.id,
    )


def audio_seconds(item: BenchmarkItem) -> list[float]:
    """Durations of an item's audio files from their headers (0 for a file that cannot be read: preparing the
    item will report it)."""
    import soundfile

    out = []
    for path in item.audio:
        try:
            out.append(float(soundfile.info(str(path)).duration))
        except (RuntimeError, OSError):  # soundfile's errors are RuntimeErrors
            out.append(0.0)
    return out


def plan_items(
    engine: InferenceEngine,
    task: str,
    items: Sequence[BenchmarkItem],
    settings: GenerationSettings,
) -> list[PlannedBatch]:
    """Batches of ``items`` as the engine plans them (equal settings, similar lengths, within its caps)."""
    lengths = [engine.estimate_tokens(item_request(i, settings), audio_seconds(i)) for i in items]
    plan = engine.plan(lengths, [settings] * len(items))
    return [PlannedBatch(task, [items[k] for k in batch], settings) for batch in plan]


def prepare_batch(engine: InferenceEngine, batch: PlannedBatch) -> PlannedBatch:
    """Encode a batch's items (audio decoded, features, prompt ids); failures stay per item.

    In a data-loader worker, the items' feature tensors become views of one tensor per kind: a batch then
    crosses to the main process as one shared-memory block instead of two per item (32 items of 8 s: 29 ms a
    batch instead of 55, on the main process's time too)."""
    import torch

    batch.prepared = [engine.prepare(item_request(i, batch.settings)) for i in batch.items]
    if torch.utils.data.get_worker_info() is not None:
        samples = [p.sample for p in batch.prepared if p.sample is not None]
        for key in ("input_features", "input_features_mask"):
            parts = [s[key] for s in samples]
            if len(parts) > 1 and len({t.shape[1:] for t in parts}) == 1:
                views = torch.cat(parts).split([t.shape[0] for t in parts])
                for sample, view in zip(samples, views):
                    sample[key] = view
    return batch


def answer_items(engine: InferenceEngine, batch: PlannedBatch) -> list[Result]:
    """Run one planned batch (prepared first if it is not yet)."""
    if not batch.prepared:
        prepare_batch(engine, batch)
    return engine.run(batch.prepared)


def result_line(result: Result) -> dict[str, Any]:
    """The predictions-file line of one answer (stripped text; ``error`` only when it failed)."""
    line: dict[str, Any] = {
        "id": result.id,
        "prediction": None if result.text is None else result.text.strip(),
    }
    if result.error is not None:
        line["error"] = result.error
    else:
        line.update(
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            audio_seconds=round(result.audio_seconds, 3),
        )
    return line
