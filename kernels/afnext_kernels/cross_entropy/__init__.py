"""Fused linear cross-entropy: ``CE(hidden @ weight.T, labels)`` without materialising the logits."""

from __future__ import annotations

import torch

from afnext_kernels.cross_entropy.reference import (
    LinearCrossEntropyFunction,
    ce_chunk_reference,
    default_chunk_size,
    linear_cross_entropy_reference,
)
from afnext_kernels.dispatch import resolve_impl
from afnext_kernels.errors import InputError, KernelUnavailableError

__all__ = ["LinearCrossEntropyFunction", "linear_cross_entropy", "linear_cross_entropy_reference"]


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    impl: str = "auto",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``hidden @ weight.T`` against ``labels``, chunked over tokens.

    Matches ``F.cross_entropy(hidden @ weight.T, labels, ignore_index=..., reduction=...,
    label_smoothing=...)`` plus an optional z-loss ``z_loss * logsumexp(logits)^2`` per token; gradients flow to
    ``hidden`` and ``weight``.

    Args:
        hidden: ``(N, H)`` (or ``(..., H)``) final hidden states.
        weight: ``(V, H)`` LM-head weight, same dtype and device as ``hidden``.
        labels: ``(N,)`` (or ``(...)``) int targets in ``[0, V)`` or ``ignore_index``.
        ignore_index: Label that contributes neither loss nor gradient.
        reduction: ``"mean"`` over tokens that are not ignored, or ``"sum"``.
        impl: ``"auto"`` (Triton on CUDA, reference elsewhere), ``"triton"`` or ``"reference"``.
        label_smoothing: ``eps`` in ``[0, 1]``, as ``F.cross_entropy``.
        z_loss: Coefficient of the z-loss (0 disables it).
        chunk_size: Tokens per chunk (default: Liger-Kernel's rule, at least 256).

    Returns:
        Scalar float32 loss.
    """
    if hidden.ndim < 1 or weight.ndim != 2 or hidden.shape[-1] != weight.shape[1]:
        raise InputError(
            f"linear_cross_entropy: hidden (..., H) and weight (V, H) must share H; got {tuple(hidden.shape)} "
            f"and {tuple(weight.shape)}."
        )
    hidden2 = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
    labels1 = labels.reshape(-1)  # (N,)
    if labels1.numel() != hidden2.shape[0] or labels.dtype.is_floating_point:
        raise InputError(
            f"linear_cross_entropy: labels must be integers with one per hidden row; got {labels.dtype} "
            f"{tuple(labels.shape)} for hidden {tuple(hidden.shape)}."
        )
    if (
        hidden.dtype != weight.dtype
        or hidden.device != weight.device
        or labels.device != hidden.device
    ):
        raise InputError(
            f"linear_cross_entropy: hidden, weight and labels must share a device (and hidden / weight a dtype); "
            f"got {hidden.dtype}@{hidden.device}, {weight.dtype}@{weight.device}, labels@{labels.device}."
        )
    if reduction not in ("mean", "sum"):
        raise InputError(
            f"linear_cross_entropy: reduction must be 'mean' or 'sum', got {reduction!r}."
        )
    if not 0.0 <= label_smoothing <= 1.0 or z_loss < 0.0:
        raise InputError(
            f"linear_cross_entropy: need 0 <= label_smoothing <= 1 and z_loss >= 0; got {label_smoothing}, {z_loss}."
        )
    if chunk_size is not None and chunk_size < 1:
        raise InputError(f"linear_cross_entropy: chunk_size must be positive, got {chunk_size}.")
    vocab = weight.shape[0]
    valid = labels1 != ignore_index
    # One host sync per call: out-of-range labels would otherwise read out of bounds in the kernel.
    n_valid, n_bad = (
        int(x)
        for x in torch.stack([valid.sum(), (valid & ((labels1 < 0) | (labels1 >= vocab))).sum()])
    )
    if n_bad:
        raise InputError(
            f"linear_cross_entropy: {n_bad} labels are outside [0, {vocab}) and not ignore_index={ignore_index}."
        )
    chunk = chunk_size or default_chunk_size(hidden2.shape[0], vocab, weight.shape[1])
    chosen = resolve_impl(impl, hidden, op="linear_cross_entropy")
    if chosen == "reference":
        chunk_fn = ce_chunk_reference
    else:
        if hidden.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise KernelUnavailableError(
                f"linear_cross_entropy: impl='triton' supports float16/bfloat16/float32, got {hidden.dtype}."
            )
        from afnext_kernels._triton import load_kernels

        chunk_fn = load_kernels("cross_entropy.triton_ce").ce_chunk_triton
    return LinearCrossEntropyFunction.apply(
        hidden2, weight, labels1, ignore_index, reduction, float(label_smoothing), float(z_loss), chunk, chunk_fn,
        n_valid,
    )  # fmt: skip
