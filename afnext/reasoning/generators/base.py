"""The generator interface: a timeline in, (question, chain, answer) samples out.

Third-party generators implement :class:`Generator` (two methods) and ship a config
``their_pkg/conf/reasoning/generator/<name>.yaml`` with ``_target_`` pointing at their class; with the
package registered under the ``afnext.plugins`` entry point, ``afnext data build generator=<name>``
picks it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from afnext.errors import FormatError
from afnext.reasoning.format import Span, TACoTResponse
from afnext.reasoning.timeline import Timeline

__all__ = ["Generator", "QASample"]


@dataclass(frozen=True)
class QASample:
    """One generated sample.

    Attributes:
        question_type: What the question tests (``count``, ``order``, ...; free for third parties).
        question: The user's text, options included for multiple choice (without ``<sound>``).
        response: The chain (``think=True``, every step citing spans) and the final answer.
        choices: The option texts of a multiple-choice question (the answer is ``(X) option``); empty for
            open questions.
    """

    question_type: str
    question: str
    response: TACoTResponse
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.question.strip():
            raise FormatError(f"a {self.question_type!r} sample has an empty question")
        if not self.response.think:
            raise FormatError(
                f"a {self.question_type!r} sample needs a chain (response.think=True)"
            )

    @property
    def answer(self) -> str:
        """The final answer (the Instruct target)."""
        return self.response.answer

    @property
    def evidence(self) -> tuple[Span, ...]:
        """Every span the chain cites: the reference for span-grounding recall."""
        return self.response.spans

    def think_text(self) -> str:
        """The Think-mode target: ``<think> ... </think>`` then the answer."""
        return self.response.render()


@runtime_checkable
class Generator(Protocol):
    """Turns a timeline into samples; implementations are built by Hydra from ``conf/reasoning/generator``."""

    def generate(self, timeline: Timeline, rng: random.Random) -> list[QASample]:
        """Samples about one audio file.

        Args:
            timeline: The file's ground truth (``duration`` set).
            rng: The only source of randomness, seeded per file by the builder, so builds are
                deterministic however they are sharded or resumed.

        Returns:
            Zero or more samples; zero when nothing fits (the builder counts such files).
        """
        ...

    def report(self) -> dict[str, Any]:
        """Counters since creation (numbers, or dicts of numbers), e.g. rejections by reason; the
        builder writes them to ``summary.json``."""
        ...
