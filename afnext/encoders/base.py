"""The audio-encoder interface every encoder (built in or plugin) implements.

An encoder turns a batch of fixed-length windows of input features into frames:
``forward(features (windows, channels, frames), mask (windows, frames)) -> (hidden (windows, T, out_dim),
mask (windows, T))``. It declares ``out_dim`` and ``frame_rate`` (output tokens per second) so neighbours
(time embedding, connector, processor) size themselves from it instead of repeating numbers.

Optional members, with the defaults the model uses when an encoder lacks them:

* ``front_end``: its feature front end (:class:`afnext.audio.frontends.FrontEnd`: sampling rate, window
  length, feature frames per second and the waveform -> features callable). Default: Whisper's 128-bin log-mel
  of 30 s windows (``n_mels`` and ``window_seconds`` attributes change those), or raw 16 kHz windows for an
  encoder that says ``input_kind = "waveform"``.
* ``output_lengths(frame_lengths) -> token_lengths``: true token count of each window from its count of
  valid feature frames (default: ``ceil(frames * frame_rate / front_end.frame_rate)``).
* ``enable_activation_checkpointing()``: recompute its layers' activations in the backward.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch

from afnext.audio.frontends import FrontEnd, LogMelFrontEnd, WaveformFrontEnd

__all__ = ["AudioEncoder", "encoder_front_end", "encoder_output_lengths"]


@runtime_checkable
class AudioEncoder(Protocol):
    """What afnext needs of an audio encoder.

    Attributes:
        out_dim: Channels of each output frame.
        frame_rate: Output frames (tokens) per second of audio.
    """

    out_dim: int
    frame_rate: float

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def encoder_front_end(encoder: object) -> FrontEnd:
    """The front end an encoder declares, or the default one (see the module docstring)."""
    front_end = getattr(encoder, "front_end", None)
    if front_end is not None:
        return front_end
    window = float(getattr(encoder, "window_seconds", 30.0))
    if getattr(encoder, "input_kind", "log_mel") == "waveform":
        return WaveformFrontEnd(window_seconds=window)
    return LogMelFrontEnd(n_mels=int(getattr(encoder, "n_mels", 128)), window_seconds=window)


def encoder_output_lengths(encoder: object, frame_lengths: torch.Tensor) -> torch.Tensor:
    """True output token count of each window.

    Args:
        encoder: Any :class:`AudioEncoder`.
        frame_lengths: ``(windows,)`` valid feature frames per window (in its front end's frames).

    Returns:
        ``(windows,)`` int64 token counts.
    """
    fn = getattr(encoder, "output_lengths", None)
    if fn is not None:
        return torch.as_tensor(fn(frame_lengths)).to(torch.long)
    ratio = encoder.frame_rate / encoder_front_end(encoder).frame_rate  # type: ignore[attr-defined]
    return torch.tensor(
        [math.ceil(int(n) * ratio) for n in frame_lengths.tolist()],
        dtype=torch.long,
        device=frame_lengths.device,
    )
