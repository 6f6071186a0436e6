"""Rotary time embedding (RoTE) on encoder outputs, as the AF-Next / Music Flamingo checkpoints use it.

Applied after the encoder's pooling and before the projector (not inside LLM attention). Token ``n`` of
window ``w`` of an audio sits at ``tau = w * window + n / frame_rate`` seconds (``30 w + 0.04 n`` for
AF-Whisper); the formula itself lives in ``afnext_kernels.rote`` (reference = transformers'
``MusicFlamingoRotaryEmbedding``), and the fused kernel computes the same thing on GPU.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from afnext.errors import ConfigError
from afnext.specs import RecordsSpec

__all__ = ["RotaryTimeEmbedding", "rotated_channels"]

log = logging.getLogger(__name__)


def rotated_channels(dim: int, partial_rotary_factor: float) -> int:
    """Channels rotated per axis: ``int(dim * partial_rotary_factor)`` rounded down to an even count (a rotation
    turns channel pairs), logged when it was rounded.

    Raises:
        ConfigError: Nothing would rotate, or the two axes would need more than ``dim`` channels; the message
            names the ``time_embedding.partial_rotary_factor`` values that work, and ``time_embedding=none``.
    """
    wanted = int(dim * partial_rotary_factor)
    axis = wanted - wanted % 2
    if axis < 2 or 2 * axis > dim:
        low, high = 2 / dim, (dim // 2 - (dim // 2) % 2) / dim
        works = (
            f"factors from {low:.4g} to {high:.4g} work for this width"
            if dim // 2 >= 2
            else "no factor works for this width"
        )
        raise ConfigError(
            f"time_embedding: dim={dim} x partial_rotary_factor={partial_rotary_factor} rotates {wanted} "
            f"channels per axis; two axes need an even count of at least 2 each within dim ({works}: set "
            "time_embedding.partial_rotary_factor), or use time_embedding=none"
        )
    if axis != wanted:
        log.info(
            "time_embedding: dim=%d x partial_rotary_factor=%s gives %d channels per axis; rotating %d "
            "(a rotation turns channel pairs)",
            dim,
            partial_rotary_factor,
            wanted,
            axis,
        )
    return axis


class RotaryTimeEmbedding(nn.Module, metaclass=RecordsSpec):
    """Rotate the first ``2 * int(dim * partial_rotary_factor)`` channels by time-dependent angles.

    Args:
        dim: Encoder width (from the encoder's ``out_dim``).
        frame_rate: Encoder tokens per second (from the encoder).
        theta: Rotary base (1200 in AF-Next).
        partial_rotary_factor: Share of ``dim`` rotated per axis (0.2: 256 of 1280 per axis, window axis
            and in-window axis, 512 channels in all).
        max_positions: Normalisation of the position tables (equals ``theta`` in the checkpoints).
        impl: Kernel choice passed to the dispatch (``auto``, ``triton``, ``reference``).
        window_seconds: Seconds per encoder window (from the encoder). ``None``, or equal to tokens per
            window / ``frame_rate`` (AF-Whisper: 750 / 25 = 30), keeps the checkpoints' formula bit for bit;
            otherwise (HuBERT, WavLM: 1499 tokens at 50 Hz per 30 s) window ``w`` starts at
            ``w * window_seconds``, not at ``w * 29.98``.
    """

    needs_timestamps = True

    def __init__(
        self,
        dim: int,
        frame_rate: float,
        theta: float = 1200.0,
        partial_rotary_factor: float = 0.2,
        max_positions: int | None = None,
        impl: str = "auto",
        window_seconds: float | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.frame_rate = dim, frame_rate
        self.theta, self.partial_rotary_factor = theta, partial_rotary_factor
        self.max_positions = int(theta) if max_positions is None else max_positions
        self.impl, self.window_seconds = impl, window_seconds
        self.axis_dim = rotated_channels(dim, partial_rotary_factor)

    def token_timestamps(self, window_index: torch.Tensor, tokens: int) -> torch.Tensor:
        """Seconds of each token, float32, in the checkpoints' operation order.

        Args:
            window_index: ``(W,)`` index of each window within its audio.
            tokens: Tokens per (padded) window, ``T``.

        Returns:
            ``(W, T)`` float32: ``(w * T) * step + n * step`` with ``step = 1 / frame_rate`` (the
            checkpoints' order), or ``w * window_seconds + n * step`` when the window is not ``T`` steps long.
        """
        step = 1.0 / self.frame_rate
        offsets = torch.arange(tokens, device=window_index.device, dtype=torch.float32) * step
        window = window_index.to(torch.long).unsqueeze(1)
        if self._window_seconds(tokens) is None:
            return window * tokens * step + offsets
        return window * self.window_seconds + offsets

    def _window_seconds(self, tokens: int) -> float | None:
        """``window_seconds`` where it differs from ``tokens / frame_rate``, else ``None``."""
        if (
            self.window_seconds is None
            or abs(tokens / self.frame_rate - self.window_seconds) < 1e-9
        ):
            return None
        return float(self.window_seconds)

    def forward(self, hidden: torch.Tensor, window_index: torch.Tensor) -> torch.Tensor:
        """Apply RoTE.

        Args:
            hidden: ``(W, T, dim)`` encoder outputs.
            window_index: ``(W,)`` index of each window within its own audio (0 for its first window).

        Returns:
            ``(W, T, dim)``, same dtype.
        """
        from afnext_kernels import rote

        tokens = hidden.shape[1]
        timestamps = self.token_timestamps(window_index.to(hidden.device), tokens)
        return rote(
            hidden,
            timestamps,
            window_duration=self._window_seconds(tokens) or tokens / self.frame_rate,
            axis_dim=self.axis_dim,
            theta=self.theta,
            max_positions=self.max_positions,
            impl=self.impl,
        )
