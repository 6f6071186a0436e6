"""Chunked linear cross-entropy in plain PyTorch: the reference path, and the chunk driver the Triton path shares.

``loss = CE(hidden @ weight.T, labels)`` without materialising the ``(N, V)`` logits: tokens are processed in
chunks of ``chunk_size`` rows, and because the gradient of each chunk's logits is known in closed form, the
forward pass also produces ``d loss / d hidden`` and ``d loss / d weight`` chunk by chunk and keeps only those
(the design of Liger-Kernel's fused linear cross-entropy, ``src/liger_kernel/ops/fused_linear_cross_entropy.py``).
The backward pass then only scales them by the incoming gradient. Peak memory is one chunk of logits plus the
gradients, instead of the logits, their log-softmax and their gradient.

Per token with logits ``x`` (float32), ``lse = logsumexp(x)``, label ``y``, smoothing ``eps``, z-loss ``z``:
``loss = (1 - eps) (lse - x_y) + eps (lse - mean(x)) + z lse^2`` (PaLM's z-loss, Chowdhery et al. 2022), and
``d loss / d x_j = softmax(x)_j (1 + 2 z lse) - (1 - eps) [j = y] - eps / V``. ``eps`` follows
``F.cross_entropy(label_smoothing=eps)``; ignored tokens contribute nothing and ``"mean"`` divides by the
number of tokens that are not ignored (NaN when there are none, as ``F.cross_entropy``).

The driver (:func:`chunked_forward`, :func:`chunked_backward`) takes the per-chunk loss / gradient as a function:
:func:`ce_chunk_reference` here, the Triton kernel in :mod:`afnext_kernels.ops.linear_cross_entropy`, whose
``LinearCrossEntropyFunction`` wraps the same driver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "ChunkFn",
    "LinearCrossEntropyReferenceFunction",
    "ce_chunk_reference",
    "chunked_backward",
    "chunked_forward",
    "default_chunk_size",
    "linear_cross_entropy_reference",
]

# (logits chunk (C, V), labels (C,), ignore_index, label_smoothing, z_loss, grad_scale, need_grad)
#   -> (per-token loss (C,) float32, d loss / d logits (C, V) or None)
ChunkFn = Callable[
    [torch.Tensor, torch.Tensor, int, float, float, float, bool],
    tuple[torch.Tensor, torch.Tensor | None],
]


def default_chunk_size(tokens: int, vocab: int, hidden: int) -> int:
    """Rows per chunk: Liger-Kernel's rule (a chunk of logits about the size of ``hidden``), at least 256.

    Liger picks ``next_pow2(ceil(N / ceil(V / H)))`` so the logits chunk holds about ``N * H`` elements; the
    floor of 256 rows keeps the matrix products efficient when ``H`` is small (CPU runs).
    """
    inc = max(1, -(-vocab // max(hidden, 1)))
    rows = -(-tokens // inc)
    return max(1, min(tokens, max(256, 1 << max(rows - 1, 0).bit_length())))


def ce_chunk_reference(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    grad_scale: float,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Loss and logits-gradient of one chunk in PyTorch (float32, in place on a float32 ``logits``).

    Args:
        logits: ``(C, V)`` chunk of logits; overwritten when float32.
        labels: ``(C,)`` int targets.
        ignore_index: Label value that contributes nothing.
        label_smoothing: ``eps`` in ``[0, 1]``.
        z_loss: Coefficient of ``lse^2``.
        grad_scale: Factor folded into the gradient (``1 / n_valid`` for ``"mean"``).
        need_grad: Whether to return the gradient.

    Returns:
        Per-token loss ``(C,)`` float32 (0 for ignored tokens) and ``d loss / d logits`` ``(C, V)`` float32 or None.
    """
    x = logits.float()  # (C, V), the same tensor when already float32
    vocab = x.shape[1]
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    lse = torch.logsumexp(x, dim=-1)  # (C,)
    loss = lse - x.gather(1, safe[:, None])[:, 0]
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss + label_smoothing * (lse - x.mean(dim=-1))
    if z_loss:
        loss = loss + z_loss * lse.square()
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    if not need_grad:
        return loss, None
    grad = x.sub_(lse[:, None]).exp_()  # softmax, in place
    if z_loss:
        grad.mul_((1.0 + 2.0 * z_loss * lse)[:, None])
    if label_smoothing:
        grad.sub_(label_smoothing / vocab)
    rows = torch.arange(grad.shape[0], device=grad.device)
    grad[rows, safe] -= 1.0 - label_smoothing
    grad.mul_((valid.to(grad.dtype) * grad_scale)[:, None])
    return loss, grad


# Whether torch.addmm(out_dtype=float32) may be used on CUDA (cleared after the first failure).
_ADDMM_OUT_DTYPE_WORKS = hasattr(torch.ops.aten.addmm, "dtype_out")


def _accumulate_grad_weight(
    grad_weight: torch.Tensor, dlogits: torch.Tensor, hidden: torch.Tensor
) -> None:
    """``grad_weight += dlogits.T @ hidden`` into a float32 buffer without a (V, H) temporary."""
    global _ADDMM_OUT_DTYPE_WORKS
    if dlogits.dtype == torch.float32:
        grad_weight.addmm_(dlogits.t(), hidden.float())
        return
    if grad_weight.is_cuda and _ADDMM_OUT_DTYPE_WORKS:
        # 16-bit operands, float32 accumulator: torch>=2.8's addmm(out_dtype=) on CUDA.
        try:
            torch.addmm(grad_weight, dlogits.t(), hidden, out_dtype=torch.float32, out=grad_weight)
            return
        except (RuntimeError, TypeError):  # an older torch, or one refusing out aliasing its input
            _ADDMM_OUT_DTYPE_WORKS = False
    if grad_weight.is_cuda:
        # A 16-bit (V, H) product per chunk (cuBLAS accumulates it in float32), added in float32.
        grad_weight.add_(dlogits.t() @ hidden)
    else:
        grad_weight.addmm_(dlogits.t().float(), hidden.float())


def chunked_forward(
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
    chunk_fn: ChunkFn,
) -> torch.Tensor:
    """Forward of a linear cross-entropy autograd Function: the loss, with the gradients saved on ``ctx``.

    Args:
        ctx: The autograd context (its ``needs_input_grad`` says which gradients to compute).
        hidden: ``(N, H)``.
        weight: ``(V, H)``.
        labels: ``(N,)`` int targets or ``ignore_index``.
        ignore_index: Label that contributes nothing.
        reduction: ``"mean"`` or ``"sum"``.
        label_smoothing: ``eps`` in ``[0, 1]``.
        z_loss: Coefficient of ``lse^2``.
        chunk_size: Tokens per chunk.
        n_valid: Tokens whose label is not ``ignore_index`` (counted by the caller, one host sync).
        chunk_fn: Loss and logits-gradient of one chunk (see ``ChunkFn``).

    Returns:
        Scalar float32 loss.
    """
    tokens = hidden.shape[0]
    need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    need_grad = need_h or need_w
    grad_scale = 1.0 / n_valid if reduction == "mean" and n_valid > 0 else 1.0
    grad_hidden = torch.empty_like(hidden) if need_h else None
    grad_weight = (
        torch.zeros(weight.shape, device=weight.device, dtype=torch.float32) if need_w else None
    )
    total = torch.zeros((), device=hidden.device, dtype=torch.float32)
    for start in range(0, tokens, chunk_size):
        h = hidden[start : start + chunk_size]  # (C, H)
        logits = h @ weight.t()  # (C, V) in the input dtype, accumulated in float32 by the matmul
        loss, dlogits = chunk_fn(
            logits, labels[start : start + chunk_size], ignore_index, label_smoothing, z_loss,
            grad_scale, need_grad,
        )  # fmt: skip
        total += loss.sum()
        if dlogits is not None:
            if grad_hidden is not None:
                torch.matmul(
                    dlogits.to(weight.dtype),
                    weight,
                    out=grad_hidden[start : start + chunk_size],
                )
            if grad_weight is not None:
                _accumulate_grad_weight(grad_weight, dlogits, h)
        del logits, dlogits
    if reduction == "mean":
        total = total / n_valid if n_valid > 0 else torch.full_like(total, float("nan"))
    ctx.save_for_backward(
        grad_hidden if grad_hidden is not None else torch.empty(0),
        grad_weight.to(weight.dtype) if grad_weight is not None else torch.empty(0),
    )
    ctx.has = (need_h, need_w)
    return total


def chunked_backward(
    ctx: Any, grad_output: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Backward of a linear cross-entropy autograd Function: the saved gradients scaled by ``grad_output``.

    Returns:
        ``d loss / d hidden`` ``(N, H)`` and ``d loss / d weight`` ``(V, H)``, each None where not needed.
    """
    grad_hidden, grad_weight = ctx.saved_tensors
    need_h, need_w = ctx.has
    if not torch.equal(grad_output, torch.ones_like(grad_output)):
        # Out of place, so a second backward (retain_graph=True) still starts from the saved gradients.
        scale = grad_output.to(torch.float32)
        grad_hidden = (grad_hidden * scale).to(grad_hidden.dtype) if need_h else grad_hidden
        grad_weight = (grad_weight * scale).to(grad_weight.dtype) if need_w else grad_weight
    return grad_hidden if need_h else None, grad_weight if need_w else None


class LinearCrossEntropyReferenceFunction(torch.autograd.Function):
    """Chunked linear cross-entropy in PyTorch whose forward computes the gradients (see the module docstring)."""

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
        """Returns the scalar loss (float32); arguments as :func:`chunked_forward`."""
        return chunked_forward(
            ctx, hidden, weight, labels, ignore_index, reduction, label_smoothing, z_loss, chunk_size,
            n_valid, ce_chunk_reference,
        )  # fmt: skip

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        """Gradients for ``hidden`` and ``weight``; ``None`` for the rest."""
        return *chunked_backward(ctx, grad_output), *([None] * 7)


def linear_cross_entropy_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Chunked PyTorch linear cross-entropy (validated inputs: ``hidden (N, H)``, ``weight (V, H)``, ``labels (N,)``).

    Returns:
        Scalar float32 loss.
    """
    n_valid = int((labels != ignore_index).sum())
    chunk = chunk_size or default_chunk_size(hidden.shape[0], weight.shape[0], weight.shape[1])
    return LinearCrossEntropyReferenceFunction.apply(
        hidden, weight, labels, ignore_index, reduction, label_smoothing, z_loss, chunk, n_valid
    )
