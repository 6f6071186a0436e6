"""Triton rotary time embedding (RoTE): kernels, autograd Function and launch code; angles formed in the kernel.

The reference (:mod:`afnext_kernels.ops.rote_reference`) materialises ``(W, T, 2 * axis_dim)`` float32 angles and
float64 cos / sin tables. Here one kernel launch reads the hidden states, the ``(W, T)`` timestamps and the
``axis_dim / 2`` inverse frequencies (cached per device), and each program forms its tokens' angles with the
reference's float32 operations in the same order: ``a = -tau * 2 * pi`` per token,
``p_w = round_half_even(t_w0 / window) / max_pos`` per window, ``p_n = n / max_pos * 2 pi`` per frame, then ``freq = p * inv_freq`` and ``angle = freq * a``. For float32 timestamps the
angles equal the reference's bit for bit on the same device: PyTorch divides a tensor by a Python number
exactly on CPU but multiplies by the number's float32 reciprocal on CUDA, and the kernel does the same (which
matters: a last-bit change of ``p_n`` moves an angle of 4e4 rad by ~2e-3). The cosine and sine then differ from the reference's float32 ``cos`` /
``sin`` by a few float32 ulps: angles reach ~4e4 rad, so the angle is first reduced by a multiple of 2 pi in float64
(exact enough), and the float32 ``tl.cos`` / ``tl.sin`` of the reduced angle may be the GPU's approximate
instructions. The pair rotation (``(x0, x1) -> (x0 c - x1 s, x1 c + x0 s)``) runs in float32 where the reference
uses float64. The backward pass rotates the gradient by the opposite angle.

Tiles are read and written as contiguous channels and split into the pair halves in registers; tiles holding only
pass-through channels are copied without any trigonometry.
"""

from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from afnext_kernels._triton import TunableKernel, check_device, interpreter_active
from afnext_kernels.ops.rote_reference import rote_inv_freq

INTERPRETED = interpreter_active()

__all__ = ["INTERPRETED", "RoteFunction", "rote_triton"]


@triton.jit
def _rote_rotate(
    X, Y, TS, INV_FREQ,
    n_rows, seq_len, width, stride_xr, stride_yr, window_duration, max_positions,
    AXIS_DIM: tl.constexpr, SIGN: tl.constexpr, RECIPROCAL: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Rotate channel pairs of a (BLOCK_R, 2 * BLOCK_P) tile by ``SIGN * angle``; pairs past ``AXIS_DIM`` copy."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    first_pair = tl.program_id(1) * BLOCK_P
    cols = 2 * first_pair + tl.arange(0, 2 * BLOCK_P)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    ok = row_ok[:, None] & (cols[None, :] < width)
    x = tl.load(X + rows64[:, None] * stride_xr + cols[None, :], mask=ok, other=0.0)
    y_ptrs = Y + rows64[:, None] * stride_yr + cols[None, :]
    if first_pair >= AXIS_DIM:
        tl.store(y_ptrs, x, mask=ok)
    else:
        x0, x1 = tl.split(tl.reshape(x.to(tl.float32), (BLOCK_R, BLOCK_P, 2)))
        # Per-token scalars, each the reference's float32 expression.
        frame = rows % seq_len
        tau = tl.load(TS + rows64, mask=row_ok, other=0.0)
        window_start = tl.load(TS + (rows64 - frame), mask=row_ok, other=0.0)
        a = (-tau * 2.0) * 3.141592653589793
        # PyTorch divides by a Python number exactly on CPU but multiplies by its float32 reciprocal on CUDA;
        # with RECIPROCAL the two "divisor" arguments hold those reciprocals.
        if RECIPROCAL:
            q = window_start * window_duration
        else:
            q = tl.math.div_rn(window_start, window_duration)
        fl = tl.floor(q)
        frac = q - fl
        odd = fl - 2.0 * tl.floor(
            fl * 0.5
        )  # 1.0 where floor(q) is odd: ties go to the even neighbour
        rounded = fl + tl.where(frac > 0.5, 1.0, tl.where(frac == 0.5, odd, 0.0))
        if RECIPROCAL:
            window_pos = rounded * max_positions
            frame_pos = (frame.to(tl.float32) * max_positions) * 6.283185307179586
        else:
            window_pos = tl.math.div_rn(rounded, max_positions)
            frame_pos = tl.math.div_rn(frame.to(tl.float32), max_positions) * 6.283185307179586
        # Angle of pair p: (p < AXIS_DIM / 2: window axis, else in-window axis), exactly the reference's products.
        pairs = first_pair + tl.arange(0, BLOCK_P)
        half: tl.constexpr = AXIS_DIM // 2
        rotated = pairs < AXIS_DIM
        window_axis = pairs < half
        freq_idx = tl.where(window_axis, pairs, pairs - half)
        inv_freq = tl.load(INV_FREQ + freq_idx, mask=rotated, other=0.0)
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
        y = tl.reshape(tl.join(y0, y1), (BLOCK_R, 2 * BLOCK_P))
        tl.store(y_ptrs, y.to(Y.dtype.element_ty), mask=ok)


@triton.jit
def _rote_fwd_kernel(
    X, Y, TS, INV_FREQ, n_rows, seq_len, width, stride_xr, stride_yr, window_duration, max_positions,
    AXIS_DIM: tl.constexpr, RECIPROCAL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Grid ``(cdiv(rows, BLOCK_R), cdiv(pairs, BLOCK_P))``: ``Y = rotate(X, +angle)``."""
    _rote_rotate(X, Y, TS, INV_FREQ, n_rows, seq_len, width, stride_xr, stride_yr, window_duration,
                 max_positions, AXIS_DIM, 1.0, RECIPROCAL, BLOCK_R, BLOCK_P)  # fmt: skip


@triton.jit
def _rote_bwd_kernel(
    DY, DX, TS, INV_FREQ, n_rows, seq_len, width, stride_dyr, stride_dxr, window_duration, max_positions,
    AXIS_DIM: tl.constexpr, RECIPROCAL: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Grid as the forward: ``dX = rotate(dY, -angle)`` (the transpose of a rotation)."""
    _rote_rotate(DY, DX, TS, INV_FREQ, n_rows, seq_len, width, stride_dyr, stride_dxr, window_duration,
                 max_positions, AXIS_DIM, -1.0, RECIPROCAL, BLOCK_R, BLOCK_P)  # fmt: skip


_INV_FREQ: dict[tuple[int, float, torch.device], torch.Tensor] = {}


def _inv_freq(axis_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """The reference's float32 inverse frequencies, built once per (axis_dim, theta, device)."""
    key = (axis_dim, float(theta), device)
    if key not in _INV_FREQ:
        _INV_FREQ[key] = rote_inv_freq(axis_dim, theta, device=device).contiguous()
    return _INV_FREQ[key]


def _configs() -> list[triton.Config]:
    # Elementwise and memory-bound: tiles of 1K-8K channels, 4 or 8 warps. On an H200 (bf16, 45,000 x 1,280) the
    # kernel ran at 2.4-2.9 TB/s over these; 8-row tiles were fastest (the autotuner picked 8 x 128 channels).
    shapes = [(8, 128, 4), (32, 64, 4), (16, 128, 4), (32, 128, 8), (64, 64, 8), (8, 64, 4)]
    return [triton.Config({"BLOCK_R": r, "BLOCK_P": p}, num_warps=w) for r, p, w in shapes]


# The fixed configuration when tuning is off (tests, AFNEXT_KERNELS_AUTOTUNE=0) or interpreted (small tiles).
_FIXED = triton.Config({"BLOCK_R": 16, "BLOCK_P": 32}) if INTERPRETED else _configs()[0]
_KEY = ["width", "AXIS_DIM"]
rote_fwd_kernel = TunableKernel(_rote_fwd_kernel, _configs(), key=_KEY, interpreted=INTERPRETED)
rote_bwd_kernel = TunableKernel(_rote_bwd_kernel, _configs(), key=_KEY, interpreted=INTERPRETED)


def _launch(
    kernel: TunableKernel,
    x: torch.Tensor,
    y: torch.Tensor,
    timestamps: torch.Tensor,
    inv_freq: torch.Tensor,
    settings: tuple[int, int, float, int],
) -> None:
    seq_len, axis_dim, window_duration, max_positions = settings
    rows, width = x.shape
    pairs = (width + 1) // 2

    def grid(meta: dict) -> tuple[int, int]:
        return (triton.cdiv(rows, meta["BLOCK_R"]), triton.cdiv(pairs, meta["BLOCK_P"]))

    # Match how PyTorch evaluates the reference's divisions by Python numbers on this device (see the kernel).
    reciprocal = x.device.type == "cuda"
    if reciprocal:
        one = torch.ones((), dtype=torch.float32)
        window_duration = (
            one / window_duration
        ).item()  # float32 reciprocal, exact as a Python float
        max_positions = (one / max_positions).item()
    kernel(
        grid, _FIXED, x, y, timestamps, inv_freq, rows, seq_len, width, x.stride(0), y.stride(0),
        float(window_duration), float(max_positions), AXIS_DIM=axis_dim, RECIPROCAL=reciprocal,
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
        windows, seq_len, width = hidden.shape
        x = hidden.reshape(windows * seq_len, width)  # (W*T, D)
        if x.stride(-1) != 1:
            x = x.contiguous()
        stamps = timestamps.to(
            torch.float32
        ).contiguous()  # no copy for the encoder's float32 (W, T)
        inv_freq = _inv_freq(axis_dim, theta, hidden.device)
        settings = (seq_len, axis_dim, window_duration, max_positions)
        y = torch.empty((windows * seq_len, width), device=hidden.device, dtype=hidden.dtype)
        if y.numel():
            _launch(rote_fwd_kernel, x, y, stamps, inv_freq, settings)
        ctx.save_for_backward(stamps, inv_freq)
        ctx.settings = settings
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
            _launch(rote_bwd_kernel, dy, dx, *ctx.saved_tensors, ctx.settings)
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
    """Triton RoTE on inputs validated by :func:`afnext_kernels.functional.rote`.

    Args:
        hidden: ``(W, T, D)`` encoder outputs, float16 / bfloat16 / float32.
        timestamps: ``(W, T)`` seconds of each token.
        window_duration: Seconds covered by one window.
        axis_dim: Channels rotated per axis (even, ``2 * axis_dim <= D``).
        theta: Rotary base.
        max_positions: Normalisation of the position tables.

    Returns:
        ``(W, T, D)`` in ``hidden``'s dtype, as :func:`afnext_kernels.ops.rote_reference.rote_reference`.

    Raises:
        KernelUnavailableError: CPU tensors without the Triton interpreter, or a device Triton does not target.
    """
    check_device("rote", hidden, sys.modules[__name__])
    return RoteFunction.apply(hidden, timestamps, window_duration, axis_dim, theta, max_positions)
