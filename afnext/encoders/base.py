"""The audio-encoder interface every encoder (built in or plugin) implements.

An encoder turns a batch of fixed-length windows of input features into frames:
``forward(features (windows, n_mels, frames), mask (windows, frames)) -> (hidden (windows, T, out_dim),
mask (windows, T))``. It declares ``out_dim`` and ``frame_rate`` (output tokens per second) so neighbours
(time embedding, connector, processor) size themselves from it instead of repeating numbers.

Optional members, with the defaults the model uses when an encoder lacks them:

* ``input_kind``: ``"log_mel"`` (Whisper 128-bin log-mel, 100 frames/s; default) or ``"waveform"``
  (raw 16 kHz samples, ``features`` shaped ``(windows, 1, samples)``).
* ``n_mels``: mel bins expected (default 128).
* ``window_seconds``: seconds per window (default 30).
* ``output_lengths(frame_lengths) -> token_lengths``: true token count of each window from its count of
  valid input frames (default: ``ceil(frames * frame_rate / input_rate)``).
"""

from __future__ import annotations

import math
from typing import Literal, Protocol, runtime_checkable

import torch

from afnext.errors import ConfigError

__all__ = [
    "AudioEncoder",
    "InputKind",
    "encoder_input_kind",
    "encoder_output_lengths",
    "input_rate",
]

InputKind = Literal["log_mel", "waveform"]

# Input frames per second of each feature kind: Whisper log-mel uses a 10 ms hop; waveforms are 16 kHz.
_INPUT_RATES: dict[str, float] = {"log_mel": 100.0, "waveform": 16000.0}


@runtime_checkable
class AudioEncoder(Protocol):
    """What afnext needs of an audio encoder.

    Attributes:
        out_dim: Channels of each output frame.
        frame_rate: Output frames (tokens) per second of audio.
    """

    out_dim: int
    frame_rate: float

    def __call__(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def encoder_input_kind(encoder: object) -> InputKind:
    """The feature kind an encoder consumes (``"log_mel"`` unless it says otherwise)."""
    kind = getattr(encoder, "input_kind", "log_mel")
    if kind not in _INPUT_RATES:
        raise ConfigError(
            f"{type(encoder).__name__}.input_kind is {kind!r}; expected one of {sorted(_INPUT_RATES)}"
        )
    return kind


def input_rate(kind: InputKind) -> float:
    """Input frames per second for a feature kind."""
    return _INPUT_RATES[kind]


def encoder_output_lengths(encoder: object, frame_lengths: torch.Tensor) -> torch.Tensor:
    """True output token count of each window.

    Args:
        encoder: Any :class:`AudioEncoder`.
        frame_lengths: ``(windows,)`` valid input frames (log-mel frames or samples) per window.

    Returns:
        ``(windows,)`` int64 token counts.
    """
    fn = getattr(encoder, "output_lengths", None)
    if fn is not None:
        return fn(frame_lengths).to(torch.long)
    ratio = encoder.frame_rate / input_rate(encoder_input_kind(encoder))  # type: ignore[attr-defined]
    return torch.tensor(
        [math.ceil(int(n) * ratio) for n in frame_lengths.tolist()],
        dtype=torch.long,
        device=frame_lengths.device,
    )
