"""Triton kernel of the chunked linear cross-entropy: loss and logits-gradient of one chunk, in place.

One program per token row streams the row's logits in ``BLOCK_V`` blocks with an online log-sum-exp
(Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"), then writes
``d loss / d logits`` over the logits in place, as Liger-Kernel's ``liger_cross_entropy_kernel`` does
(``src/liger_kernel/ops/cross_entropy.py``); the matrix products around it stay in cuBLAS (see
:mod:`afnext_kernels.cross_entropy.reference` for the driver and the formulas). There is no separate backward
kernel: the gradient is produced here, in the forward pass, and the autograd backward only scales it.
"""

from __future__ import annotations

import sys

import torch
import triton
import triton.language as tl

from afnext_kernels._triton import check_device, interpreter_active

INTERPRETED = interpreter_active()

__all__ = ["INTERPRETED", "ce_chunk_triton"]


@triton.jit
def _linear_cross_entropy_fwd_kernel(
    LOGITS, stride_row, LABELS, LOSS,
    n_cols, ignore_index, label_smoothing, z_loss, grad_scale,
    HAS_GRAD: tl.constexpr, HAS_SMOOTHING: tl.constexpr, HAS_Z_LOSS: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    """Grid ``(rows,)``: loss of one row into ``LOSS``, its logits-gradient over ``LOGITS`` when ``HAS_GRAD``."""
    row = tl.program_id(0).to(tl.int64)
    base = LOGITS + row * stride_row  # 64-bit: rows x vocabulary passes 2**31 for long packs
    label = tl.load(LABELS + row).to(tl.int32)
    offs = tl.arange(0, BLOCK_V)
    if label == ignore_index:
        tl.store(LOSS + row, 0.0)
        if HAS_GRAD:
            for start in range(0, n_cols, BLOCK_V):
                cols = start + offs
                tl.store(
                    base + cols,
                    tl.zeros([BLOCK_V], dtype=LOGITS.dtype.element_ty),
                    mask=cols < n_cols,
                )
        return

    # Pass 1: online max / sum of exp over vocabulary blocks (and the sum of logits for label smoothing).
    m = float("-inf")
    d = 0.0
    total = 0.0
    for start in range(0, n_cols, BLOCK_V):
        cols = start + offs
        x = tl.load(base + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
        if HAS_SMOOTHING:
            total += tl.sum(tl.where(cols < n_cols, x, 0.0), 0)
    lse = m + tl.log(d)
    x_label = tl.load(base + label).to(tl.float32)
    loss = lse - x_label
    if HAS_SMOOTHING:
        loss = (1.0 - label_smoothing) * loss + label_smoothing * (lse - total / n_cols)
    if HAS_Z_LOSS:
        loss += z_loss * lse * lse
    tl.store(LOSS + row, loss)

    # Pass 2: d loss / d x_j = softmax_j (1 + 2 z lse) - (1 - eps) [j = label] - eps / V, times grad_scale.
    if HAS_GRAD:
        p_scale = 1.0
        if HAS_Z_LOSS:
            p_scale = 1.0 + 2.0 * z_loss * lse
        for start in range(0, n_cols, BLOCK_V):
            cols = start + offs
            x = tl.load(base + cols, mask=cols < n_cols, other=float("-inf")).to(tl.float32)
            g = tl.exp(x - lse) * p_scale
            if HAS_SMOOTHING:
                g = g - label_smoothing / n_cols
            g = tl.where(cols == label, g - (1.0 - label_smoothing), g) * grad_scale
            tl.store(base + cols, g.to(LOGITS.dtype.element_ty), mask=cols < n_cols)


def ce_chunk_triton(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    grad_scale: float,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Triton counterpart of :func:`~afnext_kernels.cross_entropy.reference.ce_chunk_reference`.

    Args:
        logits: ``(C, V)`` contiguous chunk; overwritten by its gradient when ``need_grad``.
        labels: ``(C,)`` int targets.
        ignore_index: Label value that contributes nothing.
        label_smoothing: ``eps``.
        z_loss: Coefficient of ``lse^2``.
        grad_scale: Factor folded into the gradient.
        need_grad: Whether to write the gradient.

    Returns:
        Per-token loss ``(C,)`` float32 and the gradient (``logits`` itself, in its dtype) or None.
    """
    check_device("linear_cross_entropy", logits, sys.modules[__name__])
    rows, vocab = logits.shape
    loss = torch.empty(rows, device=logits.device, dtype=torch.float32)
    if rows == 0:
        return loss, logits if need_grad else None
    # Liger uses blocks of up to 32K columns with 32 warps on CUDA; the interpreter prefers small blocks.
    cap = 1024 if INTERPRETED else 32768
    block_v = min(cap, triton.next_power_of_2(vocab))
    launch = {} if INTERPRETED else {"num_warps": 32 if block_v >= 8192 else 8}
    _linear_cross_entropy_fwd_kernel[(rows,)](
        logits, logits.stride(0), labels, loss,
        vocab, ignore_index, float(label_smoothing), float(z_loss), float(grad_scale),
        HAS_GRAD=need_grad, HAS_SMOOTHING=label_smoothing > 0, HAS_Z_LOSS=z_loss > 0, BLOCK_V=block_v,
        **launch,
    )  # fmt: skip
    return loss, logits if need_grad else None
