"""Triton kernels of the fused rotary time embedding (RoTE): angles from timestamps inside the kernel.

The reference (:mod:`afnext_kernels.rote.reference`) materialises ``(W, T, 2 * axis_dim)`` float32 angles and
float64 cos / sin tables. Here the host prepares only per-token and per-window scalars with exactly the
reference's float32 operations (``a = -tau * 2 * pi`` per token, ``p_w = round(t_w0 / window) / max_pos``
per window, ``p_n = n / max_pos * 2 pi`` per frame, and the ``axis_dim / 2`` inverse frequencies), and each
program forms its channels' angles as the same float32 products (``freq = p * inv_freq``, ``angle = freq * a``),
so the angles equal the reference's bit for bit. The cosine and sine then differ from the reference's float32
``cos`` / ``sin`` by a few float32 ulps: angles reach ~4e4 rad, so the angle is first reduced by a multiple of
2 pi in float64 (exact enough), and the float32 ``tl.cos`` / ``tl.sin`` of the reduced angle may be the GPU's
approximate instructions. The pair rotation (``(x0, x1) -> (x0 c - x1 s, x1 c + x0 s)``) runs in float32 where
the reference uses float64. The backward pass rotates the gradient by the opposite angle.
"""

from __future__ import annotations

import math
import sys

import torch
import triton
import triton.language as tl
from afnext_kernels._triton import check_device, interpreter_active

INTERPRETED = interpreter_active()

__all__ = ["INTERPRETED", "RoteFunction", "rote_triton"]


@triton.jit
def _rote_rotate(
    X, Y, A, WPOS, TPOS, INV_FREQ,
    n_rows, seq_len, n_pairs, width, stride_xr, stride_yr,
    AXIS_DIM: tl.constexpr, SIGN: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Rotate channel pairs of a (BLOCK_R, BLOCK_P) tile by ``SIGN * angle``; pairs past ``AXIS_DIM`` copy."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    pairs = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    ch0 = 2 * pairs
    ok0 = row_ok[:, None] & (ch0[None, :] < width)
    ok1 = row_ok[:, None] & (ch0[None, :] + 1 < width)
    x_ptrs = X + rows64[:, None] * stride_xr + ch0[None, :]
    x0 = tl.load(x_ptrs, mask=ok0, other=0.0).to(tl.float32)
    x1 = tl.load(x_ptrs + 1, mask=ok1, other=0.0).to(tl.float32)

    # Angle of pair p: (p < AXIS_DIM / 2: window axis, else in-window axis), exactly the reference's products.
    half: tl.constexpr = AXIS_DIM // 2
    rotated = pairs < AXIS_DIM
    window_axis = pairs < half
    freq_idx = tl.where(window_axis, pairs, pairs - half)
    inv_freq = tl.load(INV_FREQ + freq_idx, mask=rotated, other=0.0)
    window_pos = tl.load(WPOS + rows // seq_len, mask=row_ok, other=0.0)
    frame_pos = tl.load(TPOS + rows % seq_len, mask=row_ok, other=0.0)
    a = tl.load(A + rows64, mask=row_ok, other=0.0)
    pos = tl.where(window_axis[None, :], window_pos[:, None], frame_pos[:, None])
    angle = (pos * inv_freq[None, :]) * a[:, None]  # (BLOCK_R, BLOCK_P) float32
    # Reduce by the nearest multiple of 2 pi in float64 before the float32 cos / sin.
    angle64 = angle.to(tl.float64)
    turns = angle64 * 0.15915494309189535
    turns = tl.where(turns >= 0, turns + 0.5, turns - 0.5).to(tl.int64).to(tl.float64)
    reduced = (angle64 - turns * 6.283185307179586).to(tl.float32)
    c = tl.where(rotated[None, :], tl.cos(reduced), 1.0)
    s = tl.where(rotated[None, :], tl.sin(reduced), 0.0) * SIGN
    y0 = x0 * c - x1 * s
    y1 = x1 * c + x0 * s
    y_ptrs = Y + rows64[:, None] * stride_yr + ch0[None, :]
    tl.store(y_ptrs, y0.to(Y.dtype.element_ty), mask=ok0)
    tl.store(y_ptrs + 1, y1.to(Y.dtype.element_ty), mask=ok1)


@triton.jit
def _rote_fwd_kernel(
    X, Y, A, WPOS, TPOS, INV_FREQ, n_rows, seq_len, n_pairs, width, stride_xr, stride_yr,
    AXIS_DIM: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Grid ``(cdiv(rows, BLOCK_R), cdiv(pairs, BLOCK_P))``: ``Y = rotate(X, +angle)``."""
    _rote_rotate(X, Y, A, WPOS, TPOS, INV_FREQ, n_rows, seq_len, n_pairs, width, stride_xr, stride_yr,
                 AXIS_DIM, 1.0, BLOCK_R, BLOCK_P)  # fmt: skip


@triton.jit
def _rote_bwd_kernel(
    DY, DX, A, WPOS, TPOS, INV_FREQ, n_rows, seq_len, n_pairs, width, stride_dyr, stride_dxr,
    AXIS_DIM: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Grid as the forward: ``dX = rotate(dY, -angle)`` (the transpose of a rotation)."""
    _rote_rotate(DY, DX, A, WPOS, TPOS, INV_FREQ, n_rows, seq_len, n_pairs, width, stride_dyr, stride_dxr,
                 AXIS_DIM, -1.0, BLOCK_R, BLOCK_P)  # fmt: skip


def _tables(
    timestamps: torch.Tensor,
    seq_len: int,
    *,
    window_duration: float,
    axis_dim: int,
    theta: float,
    max_positions: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token / per-window / per-frame scalars, computed with the reference's exact float32 ops."""
    from afnext_kernels.rote.reference import rote_inv_freq

    device = timestamps.device
    inv_freq = rote_inv_freq(axis_dim, theta, device=device)  # (axis_dim/2,)
    window_start = timestamps[:, 0].to(torch.float32)
    window_pos = torch.round(window_start / window_duration) / max_positions  # (W,)
    frame_pos = (
        torch.arange(seq_len, device=device, dtype=torch.float32) / max_positions * (2 * math.pi)
    )  # (T,)
    a = (-timestamps * 2 * math.pi).to(torch.float32).reshape(-1).contiguous()  # (W*T,)
    return a, window_pos.contiguous(), frame_pos.contiguous(), inv_freq.contiguous()


def _launch(
    kernel: object,
    x: torch.Tensor,
    y: torch.Tensor,
    tables: tuple[torch.Tensor, ...],
    axis_dim: int,
) -> None:
    rows, width = x.shape
    seq_len = tables[2].numel()
    pairs = (width + 1) // 2
    block_r = 16 if INTERPRETED else 32
    block_p = min(64 if INTERPRETED else 128, triton.next_power_of_2(pairs))
    launch = {} if INTERPRETED else {"num_warps": 4}
    grid = (triton.cdiv(rows, block_r), triton.cdiv(pairs, block_p))
    kernel[grid](
        x, y, *tables, rows, seq_len, pairs, width, x.stride(0), y.stride(0),
        AXIS_DIM=axis_dim, BLOCK_R=block_r, BLOCK_P=block_p, **launch,
    )  # fmt: skip


class RoteFunction(torch.autograd.Function):
    """RoTE forward / backward on Triton kernels; no gradient flows to the timestamps."""

    @staticmethod
    def forward(
        ctx: object,
        hidden: torch.Tensor,
        timestamps: torch.Tensor,
        window_duration: float,
        axis_dim: int,
        theta: float,
        max_positions: int,
    ) -> torch.Tensor:
        """``hidden (W, T, D)``, ``timestamps (W, T)`` -> ``(W, T, D)``."""
        check_device("rote", hidden, sys.modules[__name__])
        windows, seq_len, width = hidden.shape
        x = hidden.reshape(windows * seq_len, width)  # (W*T, D)
        if x.stride(-1) != 1:
            x = x.contiguous()
        tables = _tables(
            timestamps, seq_len, window_duration=window_duration, axis_dim=axis_dim, theta=theta,
            max_positions=max_positions,
        )  # fmt: skip
        y = torch.empty((windows * seq_len, width), device=hidden.device, dtype=hidden.dtype)
        if y.numel():
            _launch(_rote_fwd_kernel, x, y, tables, axis_dim)
        ctx.save_for_backward(*tables)
        ctx.axis_dim = axis_dim
        ctx.shape = hidden.shape
        return y.reshape(windows, seq_len, width)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """Gradient for ``hidden`` only."""
        windows, seq_len, width = ctx.shape
        dy = grad.reshape(windows * seq_len, width)
        if dy.stride(-1) != 1:
            dy = dy.contiguous()
        dx = torch.empty((windows * seq_len, width), device=grad.device, dtype=grad.dtype)
        if dx.numel():
            _launch(_rote_bwd_kernel, dy, dx, ctx.saved_tensors, ctx.axis_dim)
        return dx.reshape(windows, seq_len, width), None, None, None, None, None


def rote_triton(
    hidden: torch.Tensor,
    timestamps: torch.Tensor,
    *,
    window_duration: float,
    axis_dim: int,
    theta: float = 1200.0,
    max_positions: int = 1200,
) -> torch.Tensor:
    """Triton RoTE (validated inputs); see :func:`afnext_kernels.rote.reference.rote_reference`."""
    return RoteFunction.apply(hidden, timestamps, window_duration, axis_dim, theta, max_positions)
