"""Rotary time embedding (RoTE) as the AF-Next / Music Flamingo checkpoints apply it."""

from __future__ import annotations

import torch

from afnext_kernels.dispatch import resolve_impl
from afnext_kernels.errors import InputError, KernelUnavailableError
from afnext_kernels.rote.reference import rote_angles, rote_inv_freq, rote_reference

__all__ = ["rote", "rote_angles", "rote_inv_freq", "rote_reference"]


def rote(
    hidden: torch.Tensor,
    timestamps: torch.Tensor,
    *,
    window_duration: float,
    axis_dim: int,
    theta: float = 1200.0,
    max_positions: int = 1200,
    impl: str = "auto",
) -> torch.Tensor:
    """Apply the AF-Next rotary time embedding to encoder outputs.

    Args:
        hidden: ``(W, T, D)`` encoder outputs (windows, tokens per window, channels); ``D >= 2 * axis_dim``.
        timestamps: ``(W, T)`` seconds of each token.
        window_duration: Seconds covered by one window (30.0 for AF-Whisper).
        axis_dim: Channels rotated per axis (even).
        theta: Rotary base.
        max_positions: Normalisation of the position tables.
        impl: ``"auto"`` (Triton on CUDA, reference elsewhere), ``"triton"`` or ``"reference"``.

    Returns:
        ``(W, T, D)`` in ``hidden``'s dtype; differentiable in ``hidden`` (not in ``timestamps``).
    """
    if hidden.ndim != 3 or timestamps.shape != hidden.shape[:2]:
        raise InputError(
            f"rote: hidden must be (windows, tokens, channels) and timestamps (windows, tokens); got "
            f"{tuple(hidden.shape)} and {tuple(timestamps.shape)}."
        )
    if axis_dim <= 0 or axis_dim % 2 or hidden.shape[-1] < 2 * axis_dim:
        raise InputError(
            f"rote: axis_dim must be positive, even and at most half the channels ({hidden.shape[-1]}); got {axis_dim}."
        )
    if timestamps.device != hidden.device:
        raise InputError(
            f"rote: timestamps are on {timestamps.device} but hidden is on {hidden.device}."
        )
    kwargs = {
        "window_duration": window_duration,
        "axis_dim": axis_dim,
        "theta": theta,
        "max_positions": max_positions,
    }
    if resolve_impl(impl, hidden, op="rote") == "reference":
        return rote_reference(hidden, timestamps, **kwargs)
    if hidden.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise KernelUnavailableError(
            f"rote: impl='triton' supports float16/bfloat16/float32, got {hidden.dtype}."
        )
    from afnext_kernels._triton import load_kernels

    return load_kernels("rote.triton_rote").rote_triton(hidden, timestamps, **kwargs)
