"""Temporal grounding: do the spans a completion cites match the sample's ground-truth events?

Each well-formed ``<t>START-END</t>`` the completion cites scores its best intersection over union with an event
of the line's timeline (the events of ``kinds``; the timed words of speech events too, as chains may cite a
word); a span that is malformed, reversed or ends past the audio scores 0. The reward is the mean over the cited
spans, and ``no_span`` (default 0) when the completion cites none, so a policy cannot raise it by citing nothing.
``min_iou`` > 0 counts a span as 1 when its IoU reaches it and 0 otherwise (the ``span_precision`` of
:mod:`afnext.reasoning.metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence

from afnext.errors import ConfigError, DataError
from afnext.reasoning.format import spans_in
from afnext.reasoning.timeline import Timeline
from afnext.training.rewards.base import RewardSample

__all__ = ["GroundingReward", "event_spans"]


def event_spans(
    sample: RewardSample, kinds: Sequence[str] = ("sound", "music", "speech")
) -> list[tuple[float, float]]:
    """``(onset, offset)`` of the sample's events of ``kinds`` and of their timed words.

    Raises:
        DataError: The sample has no timeline, or a malformed one (names the line).
    """
    events = sample.events()
    if not events and sample.timeline is None:
        raise DataError(
            f"{sample.where}: the grounding reward needs the line's 'timeline' (afnext data build writes it)"
        )
    timeline = Timeline.from_list(events, duration=sample.duration, source=sample.where)
    chosen = timeline.of_kind(*kinds)
    spans = [(e.onset, e.offset) for e in chosen]
    spans += [(w.start, w.end) for e in chosen for w in e.words]
    return spans


class GroundingReward:
    """Mean best IoU of the cited spans with the ground-truth events (see the module docstring).

    Args:
        kinds: Event kinds a span may match (``silence`` and ``caption`` are left out by default).
        min_iou: 0: the IoU itself; above 0: 1 when the IoU reaches it, else 0.
        no_span: The reward of a completion that cites no span.
        tolerance: Seconds a span may end past the audio before it scores 0 (rounding of cited times).

    Raises:
        ConfigError: ``min_iou`` outside ``[0, 1]``.
    """

    def __init__(
        self,
        *,
        kinds: Sequence[str] = ("sound", "music", "speech"),
        min_iou: float = 0.0,
        no_span: float = 0.0,
        tolerance: float = 0.01,
    ) -> None:
        if not 0.0 <= min_iou <= 1.0:
            raise ConfigError(f"reward.grounding.min_iou={min_iou} must be in [0, 1]")
        self.kinds, self.min_iou = tuple(kinds), float(min_iou)
        self.no_span, self.tolerance = float(no_span), float(tolerance)

    def span_scores(self, sample: RewardSample, completion: str) -> list[float]:
        """The score of each span ``completion`` cites, in order."""
        references = event_spans(sample, self.kinds)
        limit = None if sample.duration is None else sample.duration + self.tolerance
        scores = []
        for span in spans_in(completion):
            if span.start > span.end or (limit is not None and span.end > limit):
                scores.append(0.0)
                continue
            best = max((span.iou(a, b) for a, b in references), default=0.0)
            scores.append(float(best >= self.min_iou) if self.min_iou > 0 else best)
        return scores

    def __call__(self, sample: RewardSample, completion: str) -> float:
        scores = self.span_scores(sample, completion)
        return sum(scores) / len(scores) if scores else self.no_span
