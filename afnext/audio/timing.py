"""Where encoder tokens sit in time, and how many of a window's tokens are real.

AF-Whisper turns each 30 s window of 3000 log-mel frames into 750 tokens: Whisper's conv stem
(stride 2, 100 Hz -> 50 Hz) and then AvgPool1d(2) (-> 25 Hz). Token ``n`` of window ``w`` is at
``30 w + 0.04 n`` seconds, the timestamps RoTE rotates by (transformers
``models/musicflamingo/modular_musicflamingo.py``, ``_build_audio_timestamps``).
"""

from __future__ import annotations

import torch

from afnext.audio.windows import WINDOW_SECONDS
from afnext.errors import ConfigError

__all__ = ["token_timestamps", "whisper_token_lengths"]


def token_timestamps(
    num_windows: int,
    tokens_per_window: int,
    *,
    window_seconds: float = WINDOW_SECONDS,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Start time in seconds of every encoder token of every window.

    Token ``n`` of window ``w`` is at ``w * window_seconds + n * window_seconds /
    tokens_per_window``; for AF-Whisper (750 tokens per 30 s) that is ``30 w + 0.04 n``.
    Computed in float32 in the same order as MusicFlamingo's ``_build_audio_timestamps``
    (``(w * tokens_per_window) * step + n * step``, ``step = window_seconds / tokens_per_window``)
    so the values are identical, not just close.

    Args:
        num_windows: Number of windows ``W``.
        tokens_per_window: Tokens each window yields, ``N`` (750 for AF-Whisper).
        window_seconds: Window length in seconds.
        device: Device of the result.

    Returns:
        ``(W, N)`` float32 seconds.
    """
    if num_windows < 0 or tokens_per_window <= 0:
        raise ConfigError(
            f"need num_windows >= 0 and tokens_per_window > 0, got {num_windows} and "
            f"{tokens_per_window}."
        )
    step = window_seconds / tokens_per_window  # seconds per token (0.04 for AF-Whisper)
    window_index = torch.arange(num_windows, device=device)  # (W,)
    offsets = torch.arange(tokens_per_window, device=device, dtype=torch.float32) * step  # (N,)
    return (window_index * tokens_per_window)[:, None] * step + offsets[None, :]  # (W, N)


def whisper_token_lengths(num_frames: int | torch.Tensor) -> int | torch.Tensor:
    """Tokens AF-Whisper yields for a given number of real log-mel frames.

    Whisper's second conv (kernel 3, stride 2, padding 1) gives ``(frames - 1) // 2 + 1``
    outputs and AvgPool1d(2) then ``(conv - 2) // 2 + 1`` (transformers
    ``models/audioflamingo3/processing_audioflamingo3.py``, ``_get_audio_token_length``).
    3000 frames (one full 30 s window) give 750 tokens. Because every full window gives an even
    frame count, summing per-window counts equals applying this to the summed frames.

    Args:
        num_frames: Frame count(s), an int or an int64 tensor of any shape (e.g. ``mask.sum(-1)``).

    Returns:
        Token count(s), same type and shape as ``num_frames``.
    """
    conv = (num_frames - 1) // 2 + 1
    return (conv - 2) // 2 + 1
