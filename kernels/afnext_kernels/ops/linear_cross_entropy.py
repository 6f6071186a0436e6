"""Triton linear cross-entropy: the chunk kernel (loss and logits-gradient in place), its launch and the Function.

One program per token row streams the row's logits in ``BLOCK_V`` blocks with an online log-sum-exp
(Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"), then writes
``d loss / d logits`` over the logits in place, as Liger-Kernel's ``liger_cross_entropy_kernel`` does
(``src/liger_kernel/ops/cross_entropy.py``); the matrix products around it stay in cuBLAS (see
:mod:`afnext_kernels.ops.linear_cross_entropy_reference` for the chunk driver and the formulas). There is no
backward kernel: the gradient is produced here, in the forward pass, and the autograd backward only scales it.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import triton
import triton.language as tl

from afnext_kernels._triton import check_device, interpreter_active
from afnext_kernels.ops.linear_cross_entropy_reference import chunked_backward, chunked_forward

INTERPRETED = interpreter_active()

__all__ = [
    "INTERPRETED",
    "LinearCrossEntropyFunction",
    "ce_chunk_triton",
    "linear_cross_entropy_triton",
]


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
    """Triton counterpart of :func:`~afnext_kernels.ops.linear_cross_entropy_reference.ce_chunk_reference`.

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


class LinearCrossEntropyFunction(torch.autograd.Function):
    """Chunked linear cross-entropy on :func:`ce_chunk_triton`; forward computes the gradients, backward scales them.

    The chunk loop, the matrix products (cuBLAS) and the gradient bookkeeping are the reference's driver
    (:func:`~afnext_kernels.ops.linear_cross_entropy_reference.chunked_forward`), so the two paths differ only in
    the per-chunk loss / gradient.
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        ignore_index: int,
        reduction: str,
        label_smoothing: float,
        z_loss: float,
        chunk_size: int,
        n_valid: int,
    ) -> torch.Tensor:
        """Returns the scalar loss (float32); ``hidden (N, H)``, ``weight (V, H)``, ``labels (N,)``."""
        return chunked_forward(
            ctx, hidden, weight, labels, ignore_index, reduction, label_smoothing, z_loss, chunk_size,
            n_valid, ce_chunk_triton,
        )  # fmt: skip

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        """Gradients for ``hidden`` and ``weight``; ``None`` for the rest."""
        return *chunked_backward(ctx, grad_output), *([None] * 7)


def linear_cross_entropy_triton(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    chunk_size: int,
    n_valid: int,
) -> torch.Tensor:
    """Triton linear cross-entropy on inputs validated by :func:`afnext_kernels.functional.linear_cross_entropy`.

    Args:
        hidden: ``(N, H)`` float16 / bfloat16 / float32.
        weight: ``(V, H)``, ``hidden``'s dtype and device.
        labels: ``(N,)`` int targets in ``[0, V)`` or ``ignore_index``.
        ignore_index: Label that contributes nothing.
        reduction: ``"mean"`` or ``"sum"``.
        label_smoothing: ``eps`` in ``[0, 1]``.
        z_loss: Coefficient of ``lse^2``.
        chunk_size: Tokens per chunk.
        n_valid: Tokens whose label is not ``ignore_index``.

    Returns:
        Scalar float32 loss.

    Raises:
        KernelUnavailableError: CPU tensors without the Triton interpreter, or a device Triton does not target.
    """
    check_device("linear_cross_entropy", hidden, sys.modules[__name__])
    return LinearCrossEntropyFunction.apply(
        hidden,
        weight,
        labels,
        ignore_index,
        reduction,
        label_smoothing,
        z_loss,
        chunk_size,
        n_valid,
    )
