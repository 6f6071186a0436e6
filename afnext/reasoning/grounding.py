"""Is a cited span grounded? It is when it matches an annotated event (or a timed word) of the timeline.

Shared by the LLM-teacher generator (which rejects ungrounded chains) and the metrics.
"""

from __future__ import annotations

from afnext.reasoning.format import Span, Step
from afnext.reasoning.timeline import Timeline

__all__ = ["best_iou", "reference_spans", "step_grounded"]


def reference_spans(timeline: Timeline) -> list[tuple[float, float]]:
    """Every span a citation may match: each event's, and each timed word's."""
    spans = [(e.onset, e.offset) for e in timeline.events]
    spans += [(w.start, w.end) for e in timeline.events for w in e.words]
    return spans


def best_iou(span: Span, references: list[tuple[float, float]]) -> float:
    """The highest intersection over union of ``span`` with any reference span (0 when none)."""
    return max((span.iou(start, end) for start, end in references), default=0.0)


def step_grounded(step: Step, references: list[tuple[float, float]], min_iou: float) -> bool:
    """Whether the step cites at least one span and every span it cites matches a reference."""
    spans = step.spans
    return bool(spans) and all(best_iou(s, references) >= min_iou for s in spans)
