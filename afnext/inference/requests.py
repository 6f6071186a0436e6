"""What flows through the inference engine: a request, the request prepared, its result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from afnext.errors import AfnextError
from afnext.inference.generation import GenerationSettings

__all__ = ["Prepared", "Request", "Result"]


@dataclass
class Request:
    """What to answer.

    Attributes:
        messages: The conversation (``role``, ``content``: text with ``<sound>`` placeholders, or parts
            ``{"type": "text" | "audio", ...}``), as :meth:`AudioProcessor.encode` takes it.
        audio: With ``<sound>`` in the text: the audio in order (paths, bytes, arrays, ``{"array", ...}``).
        settings: How to decode (``None``: the engine's default settings).
        id: The caller's name for it (kept in the result).
    """

    messages: list[dict[str, Any]]
    audio: list[Any] | None = None
    settings: GenerationSettings | None = None
    id: str | None = None


@dataclass
class Prepared:
    """A request after :meth:`InferenceEngine.prepare`: its encoded sample, or why it failed."""

    request: Request
    settings: GenerationSettings
    sample: dict[str, Any] | None = None
    error: str | None = None
    exception: AfnextError | None = None

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the prompt (0 when preparing failed)."""
        return 0 if self.sample is None else len(self.sample["input_ids"])


@dataclass
class Result:
    """The answer to one request, or its error.

    Attributes:
        id: The request's id.
        text: The generated text, special tokens removed (``None`` when the request failed).
        error: Why the request failed (``None`` when it succeeded).
        finish_reason: ``stop`` (a stop token ended it) or ``length`` (``max_new_tokens`` reached).
        prompt_tokens: Tokens in the prompt, audio included.
        completion_tokens: Tokens generated, the stop token included.
        audio_seconds: Seconds of audio in the request.
        timings: ``batch_seconds`` (the ``generate`` call's wall time) and ``batch_size`` (requests in it).
    """

    id: str | None
    text: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the request was answered."""
        return self.error is None
