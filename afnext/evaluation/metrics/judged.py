"""Scores from an LLM judge: the interface a judge offers and how its numbers are averaged.

A judge is any object with ``score(items) -> list[float | None]``: each item a mapping of the judge's template
fields (``question``, ``reference``, ``prediction``), one number per item back, ``None`` where the judge failed
on it (no parseable score). ``afnext.evaluation.judge.LLMJudge`` is one; tests use a fake. A judge that also has
``for_benchmark(prompt, scale)`` is given the benchmark's own prompt and scale first (an LLM judge asks for the
scale the benchmark averages on). Failures and scores outside the benchmark's scale are counted and reported
(with the judge's reasons when it gives them), never averaged in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from afnext.errors import DataError, UsageError

__all__ = ["Judge", "judged_scores", "scale_prompt"]


def scale_prompt(low: float, high: float) -> str:
    """The generic judge prompt asking for a score from ``low`` to ``high`` (fields ``{question}``,
    ``{reference}``, ``{prediction}``; the reply ends with ``Score: N``)."""
    return (
        "You grade answers to questions about an audio recording. You do not hear the audio; judge the "
        "candidate answer against the reference answer only.\n\n"
        "Question: {question}\nReference answer: {reference}\nCandidate answer: {prediction}\n\n"
        f"Rate how well the candidate answer agrees with the reference from {low:g} (wrong or unrelated) to "
        f"{high:g} (fully correct and complete). Explain briefly, then end with a line of the form 'Score: N'."
    )


@runtime_checkable
class Judge(Protocol):
    """What the benchmarks need from an LLM judge."""

    def score(self, items: Sequence[Mapping[str, str]]) -> list[float | None]:
        """One score per item (``None``: the judge failed on that item)."""
        ...


def judged_scores(
    judge: Judge | None,
    items: Sequence[Mapping[str, str]],
    *,
    scale: tuple[float, float],
    prompt: str | None = None,
) -> dict[str, Any]:
    """Have ``judge`` score ``items`` and average the scores.

    Args:
        judge: The judge; ``None`` reports the items as not scored (no number).
        items: ``{"question", "reference", "prediction"}`` per item.
        scale: The judge's (lowest, highest) score; the percent is ``100 * mean / highest`` (MMAU-Pro divides
            its 1-5 judge mean by 5; AF-Next reports LongAudioBench's 1-10 mean as x10).
        prompt: The benchmark's judge prompt (``None``: the judge's own), for judges with ``for_benchmark``.

    Returns:
        ``{"score": percent or None, "mean", "scale", "judged", "failed", "out_of_scale", "items",
        "per_item"}``; ``reason`` when nothing was scored.

    Raises:
        UsageError: ``judge`` has no ``score`` method.
        DataError: The judge returned a different number of scores than items.
    """
    low, high = float(scale[0]), float(scale[1])
    base = {"scale": [low, high], "items": len(items)}
    if judge is None:
        return {
            **base,
            "score": None,
            "reason": "no judge given: pass judge= (an object with score(items), e.g. "
            "afnext.evaluation.judge.LLMJudge)",
        }
    if not callable(getattr(judge, "score", None)):
        raise UsageError(f"judge {judge!r} has no score(items) method")
    if not items:
        return {**base, "score": None, "reason": "no item to judge"}
    if callable(getattr(judge, "for_benchmark", None)):
        judge = judge.for_benchmark(prompt, (low, high))
    raw = list(judge.score(list(items)))
    if len(raw) != len(items):
        raise DataError(f"the judge returned {len(raw)} scores for {len(items)} items")
    valid: list[float] = []
    per_item: list[float | None] = []
    failed = out_of_scale = 0
    for value in raw:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            failed += 1
            per_item.append(None)
        elif not low <= float(value) <= high:
            out_of_scale += 1
            per_item.append(None)
        else:
            valid.append(float(value))
            per_item.append(float(value))
    mean = sum(valid) / len(valid) if valid else None
    result = {
        **base,
        "score": 100.0 * mean / high if mean is not None else None,
        "mean": mean,
        "judged": len(valid),
        "failed": failed,
        "out_of_scale": out_of_scale,
        "per_item": per_item,
    }
    reasons = getattr(judge, "failure_reasons", None)
    if failed and reasons:  # e.g. {"out_of_range": 2, "timeout": 1}
        result["failure_reasons"] = dict(reasons)
    if not valid:
        result["reason"] = f"the judge scored none of the {len(items)} items (see failed)"
    return result
