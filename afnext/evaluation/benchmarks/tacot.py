"""afnext's own TACoT sets: the AF3-style JSONL splits ``afnext data build`` writes, scored by
:func:`afnext.reasoning.metrics.score_outputs` (answer accuracy, span precision / recall / IoU, grounded steps,
format validity; overall and per question type).

A manifest line (``docs/tacot.md``) has ``id, sound, duration, conversations`` (a ``human`` turn with
``<sound>`` and the question, a ``gpt`` turn with the target), ``timeline, question_type, answer, choices,
evidence, mode, split``. The prompt is the conversation up to the first ``gpt`` turn, verbatim (the manifest
holds it; there is no template to set), as :func:`afnext.evaluation.qa.read_qa_manifest` builds it; ``sound``
is relative to the manifest's folder (the build's ``out``), which is the root.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from afnext.errors import DataError
from afnext.evaluation.benchmarks.base import BaseBenchmark, BenchmarkItem
from afnext.evaluation.metrics.judged import Judge
from afnext.reasoning.metrics import score_outputs

__all__ = ["TACoT"]

_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


class TACoT(BaseBenchmark):
    """A TACoT split as a benchmark.

    Args:
        iou: IoU at which a cited span matches a timeline event.
        tolerance: Numeric answers match within this much.
        **kwargs: :class:`~afnext.evaluation.benchmarks.base.BaseBenchmark` settings (``file``: the split).
    """

    name = "tacot"
    metric = "answer accuracy and grounding"
    default_file = "test.jsonl"

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        iou: float = 0.5,
        tolerance: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.iou = iou
        self.tolerance = tolerance

    def item(
        self, record: dict[str, Any], root: Path | None, where: str, index: int
    ) -> BenchmarkItem:
        turns = record["conversations"]
        first_gpt = next((i for i, t in enumerate(turns) if t.get("from") == "gpt"), None)
        if first_gpt is None:
            raise DataError(f"{where}: no gpt turn to compare against")
        try:
            messages = [
                {"role": _ROLES[t["from"]], "content": t["value"]} for t in turns[:first_gpt]
            ]
        except KeyError as exc:
            raise DataError(f"{where}: unknown turn role {exc}; use human, gpt or system") from exc
        sound = record.get("sound") or []
        paths = [sound] if isinstance(sound, str) else list(sound)
        return BenchmarkItem(
            id=str(record["id"]),
            audio=[self.resolve(p, root) for p in paths],
            messages=messages,
            reference=record.get("answer") or turns[first_gpt]["value"],
            choices=list(record.get("choices") or []),
            meta={"question_type": record.get("question_type")},
            raw=record,
        )

    def score(
        self,
        items: Sequence[BenchmarkItem],
        predictions: Mapping[str, str],
        *,
        judge: Judge | None = None,
    ) -> dict[str, Any]:
        """``score_outputs`` of the predictions (full outputs: the chain is scored too); ratios in 0-1."""
        self.unknown_predictions(items, predictions)
        for key, value in predictions.items():
            if not isinstance(value, str):
                raise DataError(f"item {key!r}: the prediction must be a string")
        scores = score_outputs(
            predictions, [i.raw for i in items], iou=self.iou, tolerance=self.tolerance
        )
        scored = sum(1 for i in items if i.id in predictions)
        return {
            "benchmark": self.name,
            "metric": "TACoT answer accuracy, span grounding, format validity (ratios 0-1)",
            "items": len(items),
            "scored": scored,
            "skipped": len(items) - scored,
            **scores,
        }
