"""A teacher chat model writes longer, natural chains from the timeline; only checked ones are kept.

The teacher sees the timeline as TACoT-tagged lines (``<t>0.5-1.2</t> low tone``,
``<t>3-4.5</t> Anna: open the door``) and is asked for::

    Question: <the question>
    <think>
    <one step per line, each citing <t>START-END</t>>
    </think>
    <the answer>

Every reply goes through :func:`~afnext.reasoning.format.validate_response` (with the audio's duration)
and a grounding check (each cited span must match an event or word of the timeline with IoU at least
``min_iou``). Rejected replies are counted with their reasons in :meth:`LLMTeacherGenerator.report`.

The dataset builder hands a whole shard to :meth:`LLMTeacherGenerator.generate_many`, whose requests go
out as one batch (concurrently through :class:`~afnext.reasoning.generators.chat.OpenAIChat`). A request
that fails after its retries is logged, counted (``failed``, by reason under ``failures``) and its sample
skipped; only a batch in which every request failed is an error, so a dead server stops the build before
the shard is written. With the client's ``cache_dir`` a rerun sends no request already answered.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from afnext.errors import ConfigError, DataError, UsageError
from afnext.reasoning.format import THINK_OPEN, parse_response, validate_response
from afnext.reasoning.generators.base import QASample
from afnext.reasoning.generators.chat import ChatClient, ChatRequest, Message, complete_all
from afnext.reasoning.generators.template import cite
from afnext.reasoning.grounding import best_iou, reference_spans
from afnext.reasoning.timeline import Timeline

__all__ = ["DEFAULT_SYSTEM_PROMPT", "LLMTeacherGenerator", "parse_teacher_reply", "render_timeline"]

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "You write training data for an audio-language model that reasons about time. You are given the "
    "timeline of an audio file. Write a question a listener could answer from the audio, a step-by-step "
    "chain of reasoning, and the final answer. Every reasoning step is one line and cites the span of "
    "audio it rests on as <t>START-END</t> in seconds, copied from the timeline."
)
_QUESTION_RE = re.compile(r"\s*question\s*:\s*(.+?)\s*$", re.IGNORECASE | re.DOTALL)


def render_timeline(timeline: Timeline) -> str:
    """The timeline as TACoT-tagged lines, the way the teacher sees it."""
    assert timeline.duration is not None
    lines = []
    for event in timeline.events:
        tag = cite(event, timeline.duration)
        if event.kind == "speech" and event.text:
            lines.append(f"{tag} {event.speaker or 'unknown speaker'}: {event.text}")
        elif event.kind == "caption":
            lines.append(f"{tag} caption: {event.text}")
        elif event.kind == "speech" and event.speaker:
            lines.append(f"{tag} {event.speaker} speaks")
        else:
            lines.append(f"{tag} {event.label}")
    return "\n".join(lines)


def parse_teacher_reply(text: str) -> tuple[str | None, str]:
    """Split a reply into ``(question or None, response starting at <think>)``."""
    at = text.find(THINK_OPEN)
    head, response = (text, "") if at < 0 else (text[:at], text[at:])
    match = _QUESTION_RE.fullmatch(head)
    return (match.group(1) if match else None), response.strip()


@dataclass
class LLMTeacherGenerator:
    """Samples written by a chat model and kept only when valid and grounded.

    Args:
        client: The chat model (:class:`~afnext.reasoning.generators.chat.TransformersChat`,
            :class:`~afnext.reasoning.generators.chat.OpenAIChat`, or any ``ChatClient``; one with a
            ``complete_many`` method gets each batch at once).
        question_types: Topics to ask for, one drawn per sample (the sample's ``question_type``).
        samples_per_timeline: Replies requested per audio file.
        max_new_tokens: Most tokens per reply.
        temperature: Sampling temperature (0: greedy).
        min_iou: A cited span is grounded when it matches a timeline event or word with at least this IoU.
        system_prompt: The system message.
    """

    client: ChatClient
    question_types: Sequence[str] = ("temporal_order", "counting", "comparison", "summary")
    samples_per_timeline: int = 1
    max_new_tokens: int = 1024
    temperature: float = 0.7
    min_iou: float = 0.5
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    _counts: Counter = field(default_factory=Counter, init=False, repr=False)
    _reasons: Counter = field(default_factory=Counter, init=False, repr=False)
    _failures: Counter = field(default_factory=Counter, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.question_types:
            raise ConfigError("generator.question_types is empty; list at least one topic")
        if not 0 < self.min_iou <= 1:
            raise ConfigError(f"generator.min_iou must be in (0, 1], got {self.min_iou}")

    def messages(self, timeline: Timeline, question_type: str) -> list[Message]:
        """The prompt for one sample."""
        topic = question_type.replace("_", " ")
        user = (
            f"Audio length: {timeline.duration:g} seconds.\n"
            f"Timeline (one event per line, times in seconds):\n{render_timeline(timeline)}\n\n"
            f"Write one question about {topic} in this audio, then reason step by step and answer, in "
            "exactly this format:\nQuestion: <the question>\n<think>\n<one step per line, each citing "
            "<t>START-END</t> from the timeline>\n</think>\n<the final answer>"
        )
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": user},
        ]

    def check(
        self, reply: str, timeline: Timeline, question_type: str
    ) -> tuple[QASample | None, list[str]]:
        """Validate one reply.

        Returns:
            ``(sample, [])`` when the reply is valid and grounded, else ``(None, reasons)``.
        """
        question, response = parse_teacher_reply(reply)
        reasons = [] if question else ["no_question"]
        issues = validate_response(response, duration=timeline.duration, require_think=True)
        reasons += sorted({f"format.{issue.code}" for issue in issues})
        if issues:
            return None, reasons
        parsed = parse_response(response, source="teacher reply")  # valid, so it parses
        references = reference_spans(timeline)
        if any(best_iou(span, references) < self.min_iou for span in parsed.spans):
            reasons.append("ungrounded_span")
        if reasons:
            return None, reasons
        assert question is not None
        return QASample(question_type, question, parsed), []

    def generate(self, timeline: Timeline, rng: random.Random) -> list[QASample]:
        """Samples about one audio file (a batch of one; see :meth:`generate_many`)."""
        return self.generate_many([timeline], [rng])[0]

    def generate_many(
        self, timelines: Sequence[Timeline], rngs: Sequence[random.Random]
    ) -> list[list[QASample]]:
        """Samples about several audio files, their requests sent as one batch.

        Draws from each ``rng`` exactly as :meth:`generate` would, so a build gives the same prompts
        (and seeds) however it is batched.

        Args:
            timelines: The files' timelines (``duration`` set).
            rngs: One generator per timeline (the builder seeds it per file).

        Returns:
            The samples of each timeline, in order; a failed request leaves its sample out.

        Raises:
            ConfigError: A timeline has no duration.
            DataError: Every request of the batch failed (the message gives the first error).
        """
        if len(timelines) != len(rngs):
            raise UsageError(
                f"generate_many: {len(timelines)} timelines but {len(rngs)} rngs; give one each"
            )
        plan: list[tuple[int, str]] = []  # (timeline index, question type) per request
        requests: list[ChatRequest] = []
        for i, (timeline, rng) in enumerate(zip(timelines, rngs)):
            if timeline.duration is None:
                raise ConfigError(f"{timeline.source}: the LLM teacher needs the audio's duration")
            for _ in range(self.samples_per_timeline):
                question_type = rng.choice(list(self.question_types))
                messages = self.messages(timeline, question_type)
                seed = rng.randrange(2**31)
                requests.append(ChatRequest(messages, self.max_new_tokens, self.temperature, seed))
                plan.append((i, question_type))
        results = complete_all(self.client, requests)
        samples: list[list[QASample]] = [[] for _ in timelines]
        for (i, question_type), result in zip(plan, results):
            self._counts["requested"] += 1
            self._counts["cached"] += result.cached
            if result.text is None:
                self._counts["failed"] += 1
                self._failures[result.reason or "error"] += 1
                log.warning(
                    "%s: teacher request failed, sample skipped: %s",
                    timelines[i].source,
                    result.error,
                )
                continue
            sample, reasons = self.check(result.text, timelines[i], question_type)
            if sample is None:
                self._counts["rejected"] += 1
                self._reasons.update(reasons)
            else:
                self._counts["accepted"] += 1
                samples[i].append(sample)
        if results and all(result.text is None for result in results):
            raise DataError(
                f"all {len(results)} teacher requests of this batch failed (first: "
                f"{results[0].error}); fix the server or client settings and rerun (unfinished "
                "shards are built again)"
            )
        return samples

    def report(self) -> dict[str, Any]:
        keys = ("requested", "accepted", "rejected", "failed", "cached")
        return {
            "llm_teacher": {
                **{key: self._counts[key] for key in keys},
                "reasons": dict(sorted(self._reasons.items())),
                "failures": dict(sorted(self._failures.items())),
            }
        }
