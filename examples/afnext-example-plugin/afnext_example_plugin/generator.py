"""A TACoT data generator: "How many sounds does the recording hold?", with a chain citing each one."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from afnext.reasoning.format import Span, Step, TACoTResponse
from afnext.reasoning.generators.base import QASample
from afnext.reasoning.timeline import Timeline


class CountGenerator:
    """One counting question per audio file (the ``Generator`` interface: ``generate`` and ``report``).

    Args:
        max_events: Files with more sound events are skipped (counted in the report).
    """

    def __init__(self, max_events: int = 12) -> None:
        self.max_events = max_events
        self._counts: Counter[str] = Counter()

    def generate(self, timeline: Timeline, rng: random.Random) -> list[QASample]:
        events = [e for e in timeline.events if e.kind in ("sound", "music")]
        if not events or len(events) > self.max_events:
            self._counts["skipped"] += 1
            return []
        steps = tuple(
            Step(f"Sound {i}: {e.label} at {Span(e.onset, e.offset).tag()}.")
            for i, e in enumerate(events, start=1)
        )
        question = rng.choice(
            ["How many sounds does the recording hold?", "Count the sounds you hear."]
        )
        self._counts["samples"] += 1
        return [QASample("count", question, TACoTResponse(steps, str(len(events))))]

    def report(self) -> dict[str, Any]:
        return dict(self._counts)
