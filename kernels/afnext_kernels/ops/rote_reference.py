"""Pure-PyTorch reference of the AF-Next rotary time embedding (the spec, and the CPU path).

The formula follows transformers' ``MusicFlamingoRotaryEmbedding`` and ``apply_rotary_time_emb``
(``transformers/models/musicflamingo/modular_musicflamingo.py``), which is what the released
Music Flamingo / AF-Next checkpoints were trained with. It is *not* the RoTE of Goel et al. (2024):

* ``inv_freq[i] = 1 / theta ** (2 i / axis_dim)`` for ``i < axis_dim / 2`` (float32), where
  ``axis_dim = int(hidden * partial_rotary_factor)`` (1280 * 0.2 = 256 for AF-Whisper).
* Window axis (first ``axis_dim`` channels): ``p_w = round(window_start / window_duration) / max_positions``,
  ``f = p_w * inv_freq``, each frequency repeated for the two channels of a pair.
* In-window axis (next ``axis_dim`` channels): ``f = (n / max_positions * 2 pi) * inv_freq`` for frame ``n``.
* Both axes are modulated by the token's absolute timestamp: ``angle = f * (-2 pi tau)``.
* Pairs of adjacent channels are rotated (``(x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)``) in float64;
  channels past ``2 * axis_dim`` pass through unchanged.
"""

from __future__ import annotations

import math

import torch

from afnext_kernels.errors import KernelInputError

__all__ = ["rote_angles", "rote_inv_freq", "rote_reference"]


def rote_inv_freq(axis_dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """Inverse frequencies of one rotary axis, in float32 as the checkpoints computed them.

    Args:
        axis_dim: Channels rotated per axis (even).
        theta: Rotary base (1200 for AF-Next).
        device: Where to build the tensor.

    Returns:
        ``(axis_dim // 2,)`` float32.
    """
    if axis_dim % 2:
        raise KernelInputError(f"axis_dim must be even, got {axis_dim}")
    exponent = torch.arange(0, axis_dim, 2, dtype=torch.float32, device=device) / axis_dim
    return 1.0 / (theta**exponent)


def rote_angles(
    timestamps: torch.Tensor,
    *,
    window_duration: float,
    axis_dim: int,
    theta: float = 1200.0,
    max_positions: int = 1200,
) -> torch.Tensor:
    """Rotation angles of every token, float32 as in the reference implementation.

    Args:
        timestamps: ``(W, T)`` seconds of each token of each window (float32).
        window_duration: Seconds covered by one window (30.0 for AF-Whisper).
        axis_dim: Channels rotated per axis.
        theta: Rotary base.
        max_positions: Positions the frequency tables are normalised by (equals ``theta`` in the checkpoints).

    Returns:
        ``(W, T, 2 * axis_dim)`` float32 angles (window axis first, then in-window axis).
    """
    seq_len = timestamps.shape[1]
    inv_freq = rote_inv_freq(axis_dim, theta, device=timestamps.device)  # (axis_dim/2,)
    window_start = timestamps[:, 0].to(torch.float32)
    window_pos = torch.round(window_start / window_duration) / max_positions  # (W,)
    window_freqs = torch.repeat_interleave(
        window_pos[:, None] * inv_freq, 2, dim=-1
    )  # (W, axis_dim)
    positions = torch.arange(seq_len, device=timestamps.device, dtype=torch.float32)
    positions = positions / max_positions * (2 * math.pi)
    time_freqs = torch.repeat_interleave(positions[:, None] * inv_freq, 2, dim=-1)  # (T, axis_dim)
    window_freqs, time_freqs = torch.broadcast_tensors(
        window_freqs[:, None, :], time_freqs[None, :, :]
    )
    freqs = torch.cat((window_freqs, time_freqs), dim=-1)  # (W, T, 2 * axis_dim)
    angle = (-timestamps * 2 * math.pi).to(freqs)
    return freqs * angle.unsqueeze(-1)


def rote_reference(
    hidden: torch.Tensor,
    timestamps: torch.Tensor,
    *,
    window_duration: float,
    axis_dim: int,
    theta: float = 1200.0,
    max_positions: int = 1200,
) -> torch.Tensor:
    """Apply the rotary time embedding to encoder outputs.

    Args:
        hidden: ``(W, T, D)`` encoder outputs, any float dtype; ``D >= 2 * axis_dim``.
        timestamps: ``(W, T)`` seconds of each token.
        window_duration: Seconds covered by one window.
        axis_dim: Channels rotated per axis.
        theta: Rotary base.
        max_positions: Normalisation of the position tables.

    Returns:
        ``(W, T, D)`` in ``hidden``'s dtype.
    """
    rot_dim = 2 * axis_dim
    if hidden.shape[-1] < rot_dim:
        raise KernelInputError(
            f"hidden size {hidden.shape[-1]} is smaller than the rotated dims {rot_dim}"
        )
    angles = rote_angles(
        timestamps,
        window_duration=window_duration,
        axis_dim=axis_dim,
        theta=theta,
        max_positions=max_positions,
    )
    # float64 on CPU/CUDA as the checkpoints' code does (MPS has no float64).
    work = torch.float32 if hidden.device.type == "mps" else torch.float64
    x = hidden.to(work)
    cos, sin = angles.cos().to(work), angles.sin().to(work)
    rot, passthrough = x[..., :rot_dim], x[..., rot_dim:]
    pairs = rot.reshape(*rot.shape[:-1], -1, 2)  # (W, T, rot_dim/2, 2)
    rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    out = rot * cos + rotated_half * sin
    return torch.cat((out, passthrough), dim=-1).to(hidden.dtype)
