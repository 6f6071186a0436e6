"""Generation settings and token streaming for the inference engine.

:class:`GenerationSettings` is what one request asks of ``generate``. Named presets live in ``conf/generation/``
(``greedy``, and the AF-Next model cards' ``instruct`` / ``captioner`` / ``think``: repetition penalty 1.2,
1024 / 2048 / 4096 new tokens); a config or a request picks one and overrides single fields
(:meth:`GenerationSettings.from_mapping`). Greedy decoding is the default: it is the reproducible setting for
benchmarks, and the one under which a request's answer does not depend on the batch it was run in.

:class:`BatchStreamer` receives the tokens ``generate`` produces for a whole batch, step by step, and hands each
row's new text to that row's listener (transformers' ``TextIteratorStreamer`` takes one row only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from afnext.errors import ConfigError

__all__ = ["BatchStreamer", "GenerationSettings", "TextListener"]

TextListener = Callable[[str], None]
"""Called with each new piece of one request's text, in order (the pieces join to the final text)."""


@dataclass(frozen=True)
class GenerationSettings:
    """How one request is decoded (hashable: requests with equal settings can share a batch).

    Attributes:
        max_new_tokens: Most tokens generated after the prompt.
        min_new_tokens: Stop tokens are held back until this many tokens were generated (0: off).
        do_sample: Sample (with ``temperature``, ``top_p``, ``top_k``) instead of greedy decoding.
        temperature: Sampling temperature (> 0; unused when greedy).
        top_p: Nucleus sampling mass in (0, 1] (unused when greedy).
        top_k: Keep the k most likely tokens when sampling; 0 keeps all.
        repetition_penalty: > 1 discourages tokens already in the prompt or the answer (transformers' rule; the
            AF-Next cards use 1.2; 1.0 is off).
        seed: Seeds the sampler before a batch runs (sampling only).
    """

    max_new_tokens: int = 1024
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        checks = {
            "max_new_tokens": self.max_new_tokens >= 1,
            "min_new_tokens": 0 <= self.min_new_tokens <= self.max_new_tokens,
            "temperature": self.temperature > 0,
            "top_p": 0 < self.top_p <= 1,
            "top_k": self.top_k >= 0,
            "repetition_penalty": self.repetition_penalty > 0,
        }
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"generation settings: invalid {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)} "
                "(max_new_tokens >= 1, 0 <= min_new_tokens <= max_new_tokens, temperature > 0, 0 < top_p <= 1, "
                "top_k >= 0, repetition_penalty > 0)"
            )

    @classmethod
    def from_mapping(
        cls, *mappings: Mapping[str, Any] | None, where: str = "generation"
    ) -> GenerationSettings:
        """Settings from config mappings, later ones overriding earlier ones (a preset, then a benchmark's own).

        Args:
            *mappings: Mappings of field names to values (``None`` entries are skipped; a ``None`` value keeps
                the earlier value).
            where: The config key they came from, for error messages.

        Raises:
            ConfigError: An unknown key or an invalid value (names ``where.key``).
        """
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for mapping in mappings:
            for key, value in dict(mapping or {}).items():
                if key not in known:
                    raise ConfigError(
                        f"{where}.{key}: unknown generation setting; known: {sorted(known)}"
                    )
                if value is not None:
                    values[key] = value
        try:
            return cls(
                **{
                    k: (int(v) if k in ("max_new_tokens", "top_k") else v)
                    for k, v in values.items()
                }
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    def replace(self, **changes: Any) -> GenerationSettings:
        """A copy with some fields changed (``None`` values keep the current one)."""
        return GenerationSettings.from_mapping(
            asdict(self), {k: v for k, v in changes.items() if v is not None}
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict."""
        return asdict(self)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for transformers' ``generate`` (sampling knobs only when sampling)."""
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": self.do_sample,
            "repetition_penalty": self.repetition_penalty,
        }
        if self.min_new_tokens:
            kwargs["min_new_tokens"] = self.min_new_tokens
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # say so explicitly: a checkpoint's generation_config may ask for sampling knobs
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


class BatchStreamer:
    """A transformers streamer for a batch: decodes each row's tokens as they come and calls its listener.

    ``generate`` first ``put``s the prompt ``(B, L)``, then the new token of every row ``(B,)`` per step. A row
    ends at its first stop token (later tokens of a finished row are padding). Text is decoded from all of the
    row's tokens so far; a piece is emitted only while the decoding grows by appending (a multi-byte character
    split over tokens is held back until complete), so the pieces join to the decoded answer exactly (the caller
    sends what remains with :meth:`flush`).

    Args:
        tokenizer: Decodes ids (``skip_special_tokens=True``).
        listeners: One per row (``None``: the row is not streamed).
        stop_ids: Tokens that end a row.
    """

    def __init__(
        self, tokenizer: Any, listeners: Sequence[TextListener | None], stop_ids: Sequence[int]
    ) -> None:
        self.tokenizer = tokenizer
        self.listeners = list(listeners)
        self.stop_ids = set(stop_ids)
        self.ids: list[list[int]] = [[] for _ in self.listeners]
        self.sent = [""] * len(self.listeners)
        self.done = [False] * len(self.listeners)
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        """Called by ``generate`` with the prompt, then with each step's tokens."""
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        tokens = value.reshape(len(self.listeners), -1).tolist()  # (B, 1)
        for row, new in enumerate(tokens):
            if self.done[row]:
                continue
            for token in new:
                if token in self.stop_ids:
                    self.done[row] = True
                    break
                self.ids[row].append(token)
            if self.listeners[row] is not None:
                self._emit(row, self.tokenizer.decode(self.ids[row], skip_special_tokens=True))

    def _emit(self, row: int, text: str) -> None:
        if text.endswith("\ufffd") or not text.startswith(self.sent[row]):
            return  # an incomplete character, or a decoding that rewrote its tail: wait
        piece = text[len(self.sent[row]) :]
        if piece:
            self.sent[row] = text
            self.listeners[row](piece)  # type: ignore[misc]

    def flush(self, row: int, final_text: str) -> None:
        """Send what the listener of ``row`` has not had of ``final_text`` (the row's decoded answer)."""
        listener = self.listeners[row]
        if listener is None:
            return
        if final_text.startswith(self.sent[row]):
            piece = final_text[len(self.sent[row]) :]
            if piece:
                listener(piece)
        self.sent[row] = final_text

    def end(self) -> None:
        """Called by ``generate`` when it returns (nothing to do: the engine flushes each row)."""
