"""The public ops: validation, dispatch and errors in front of each op's reference and Triton implementation.

As Liger-Kernel's ``src/liger_kernel/functional.py``: one function per op, :func:`flash_attn_varlen`,
:func:`linear_cross_entropy`, :func:`rote`. Each checks its inputs (raising :class:`KernelInputError` naming the
argument), asks :func:`afnext_kernels.dispatch.resolve_impl` which implementation runs, and calls the PyTorch
reference (``afnext_kernels/ops/<op>_reference.py``) or the Triton module (``afnext_kernels/ops/<op>.py``, loaded
on first use by :func:`afnext_kernels._triton.load_kernels`, which says what to do where Triton cannot run).
"""

from __future__ import annotations

import torch

from afnext_kernels._triton import load_kernels
from afnext_kernels.backends import run_backend
from afnext_kernels.dispatch import ATTENTION_IMPLS, resolve_impl
from afnext_kernels.errors import KernelInputError, KernelUnavailableError
from afnext_kernels.ops.flash_attn_varlen_reference import flash_attn_varlen_reference
from afnext_kernels.ops.linear_cross_entropy_reference import (
    LinearCrossEntropyReferenceFunction,
    default_chunk_size,
)
from afnext_kernels.ops.rote_reference import rote_reference

__all__ = ["flash_attn_varlen", "linear_cross_entropy", "rote"]

_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAX_TRITON_HEAD_DIM = 128


def _check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    window: tuple[int, int],
) -> None:
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise KernelInputError(
            "flash_attn_varlen: q, k, v must be (total_tokens, heads, dim); got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}. Flatten (batch, seq) into tokens first."
        )
    if k.shape != v.shape or q.shape[2] != k.shape[2]:
        raise KernelInputError(
            f"flash_attn_varlen: k {tuple(k.shape)} and v {tuple(v.shape)} must match, and share q's head "
            f"dim {q.shape[2]}."
        )
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        raise KernelInputError(
            f"flash_attn_varlen: query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})."
        )
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise KernelInputError(
            f"flash_attn_varlen: q, k, v must share dtype and device; got {q.dtype}/{k.dtype}/{v.dtype} on "
            f"{q.device}/{k.device}/{v.device}."
        )
    for name, cu in (("cu_seqlens", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if cu.ndim != 1 or cu.numel() < 1 or cu.dtype not in (torch.int32, torch.int64):
            raise KernelInputError(
                f"flash_attn_varlen: {name} must be a 1-D int32 tensor of batch + 1 cumulative lengths starting "
                f"at 0; got {cu.dtype} of shape {tuple(cu.shape)}."
            )
        if cu.device != q.device:
            raise KernelInputError(
                f"flash_attn_varlen: {name} is on {cu.device} but q is on {q.device}."
            )
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise KernelInputError(
            "flash_attn_varlen: cu_seqlens and cu_seqlens_k must describe the same number of sequences; got "
            f"{cu_seqlens_q.numel() - 1} and {cu_seqlens_k.numel() - 1}."
        )
    if len(window) != 2 or any(int(w) < -1 for w in window):
        raise KernelInputError(
            f"flash_attn_varlen: window must be (left, right) with -1 for unbounded; got {window}."
        )


def _check_lengths(cu: torch.Tensor, total: int, max_seqlen: int, name: str) -> None:
    # Only where reading the lengths costs no device sync (CPU tensors); on CUDA they are trusted as
    # flash-attn trusts them, since a check would stall every layer.
    lengths = cu.diff()
    if int(cu[0]) != 0 or int(cu[-1]) != total or bool((lengths < 0).any()):
        raise KernelInputError(
            f"flash_attn_varlen: {name} must rise from 0 to the token count {total}; got {cu.tolist()}."
        )
    if lengths.numel() and int(lengths.max()) > max_seqlen:
        raise KernelInputError(
            f"flash_attn_varlen: a sequence has {int(lengths.max())} tokens, more than max_seqlen="
            f"{max_seqlen} given for {name}; pass the true maximum."
        )


def flash_attn_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    *,
    causal: bool = False,
    window: tuple[int, int] = (-1, -1),
    softmax_scale: float | None = None,
    impl: str = "auto",
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_k: int | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention over packed variable-length sequences (flash-attn's ``flash_attn_varlen_func`` semantics).

    Args:
        q: ``(total_q, heads, dim)``.
        k: ``(total_k, kv_heads, dim)``; ``heads`` a multiple of ``kv_heads`` (grouped-query attention).
        v: ``(total_k, kv_heads, dim)``.
        cu_seqlens: ``(batch + 1,)`` int32 cumulative sequence lengths of the queries (and of the keys unless
            ``cu_seqlens_k`` is given).
        max_seqlen: Longest query sequence (sizes the launch grid).
        causal: Causal mask, bottom-right aligned when queries are fewer than keys (KV-cache decode).
        window: ``(left, right)`` sliding window in tokens, ``-1`` unbounded; ``causal`` sets ``right = 0``.
        softmax_scale: Score scale, default ``dim ** -0.5``.
        impl: ``"auto"`` (Triton on CUDA, reference elsewhere; see :mod:`afnext_kernels.dispatch`),
            ``"triton"``, ``"reference"``, ``"xformers"`` or ``"flash_attn"``.
        cu_seqlens_k: ``(batch + 1,)`` cumulative key lengths when they differ from the queries'.
        max_seqlen_k: Longest key sequence (required with ``cu_seqlens_k``).
        return_lse: Also return the log-sum-exp (not differentiable).

    Returns:
        ``(total_q, heads, dim)`` in ``q``'s dtype, and with ``return_lse`` also ``(heads, total_q)`` float32
        natural-log log-sum-exp of the scaled scores (``-inf`` for a query that sees no key).
    """
    if (cu_seqlens_k is None) != (max_seqlen_k is None):
        raise KernelInputError(
            "flash_attn_varlen: give cu_seqlens_k and max_seqlen_k together, or neither."
        )
    if cu_seqlens_k is None:
        cu_seqlens_k, max_seqlen_k = cu_seqlens, max_seqlen
    window = (int(window[0]), int(window[1]))
    _check_inputs(q, k, v, cu_seqlens, cu_seqlens_k, window)
    if cu_seqlens.device.type == "cpu":
        _check_lengths(cu_seqlens, q.shape[0], int(max_seqlen), "cu_seqlens")
        _check_lengths(cu_seqlens_k, k.shape[0], int(max_seqlen_k), "cu_seqlens_k")
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else float(softmax_scale)
    chosen = resolve_impl(impl, q, allowed=ATTENTION_IMPLS, op="flash_attn_varlen")

    if chosen == "reference":
        out, lse = flash_attn_varlen_reference(
            q, k, v, cu_seqlens, cu_seqlens_k, causal=causal, window=window, softmax_scale=scale
        )
    elif chosen == "triton":
        if q.dtype not in _TRITON_DTYPES or q.shape[-1] > _MAX_TRITON_HEAD_DIM:
            raise KernelUnavailableError(
                f"flash_attn_varlen: impl='triton' supports float16/bfloat16/float32 and head dim <= "
                f"{_MAX_TRITON_HEAD_DIM}; got {q.dtype}, head dim {q.shape[-1]}. Use impl='reference'."
            )
        out, lse = load_kernels("flash_attn_varlen").flash_attn_varlen_triton(
            q, k, v, cu_seqlens.to(torch.int32), cu_seqlens_k.to(torch.int32), int(max_seqlen),
            int(max_seqlen_k), causal=causal, window=window, softmax_scale=scale,
        )  # fmt: skip
    else:
        out, lse = run_backend(
            chosen, q, k, v, cu_seqlens, cu_seqlens_k, int(max_seqlen), int(max_seqlen_k),
            causal=causal, window=window, softmax_scale=scale, return_lse=return_lse,
        )  # fmt: skip
    return (out, lse) if return_lse else out


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
        raise KernelInputError(
            f"linear_cross_entropy: hidden (..., H) and weight (V, H) must share H; got {tuple(hidden.shape)} "
            f"and {tuple(weight.shape)}."
        )
    hidden2 = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
    labels1 = labels.reshape(-1)  # (N,)
    if labels1.numel() != hidden2.shape[0] or labels.dtype.is_floating_point:
        raise KernelInputError(
            f"linear_cross_entropy: labels must be integers with one per hidden row; got {labels.dtype} "
            f"{tuple(labels.shape)} for hidden {tuple(hidden.shape)}."
        )
    if (
        hidden.dtype != weight.dtype
        or hidden.device != weight.device
        or labels.device != hidden.device
    ):
        raise KernelInputError(
            f"linear_cross_entropy: hidden, weight and labels must share a device (and hidden / weight a dtype); "
            f"got {hidden.dtype}@{hidden.device}, {weight.dtype}@{weight.device}, labels@{labels.device}."
        )
    if reduction not in ("mean", "sum"):
        raise KernelInputError(
            f"linear_cross_entropy: reduction must be 'mean' or 'sum', got {reduction!r}."
        )
    if not 0.0 <= label_smoothing <= 1.0 or z_loss < 0.0:
        raise KernelInputError(
            f"linear_cross_entropy: need 0 <= label_smoothing <= 1 and z_loss >= 0; got {label_smoothing}, {z_loss}."
        )
    if chunk_size is not None and chunk_size < 1:
        raise KernelInputError(
            f"linear_cross_entropy: chunk_size must be positive, got {chunk_size}."
        )
    vocab = weight.shape[0]
    valid = labels1 != ignore_index
    # One host sync per call: out-of-range labels would otherwise read out of bounds in the kernel.
    n_valid, n_bad = (
        int(x)
        for x in torch.stack([valid.sum(), (valid & ((labels1 < 0) | (labels1 >= vocab))).sum()])
    )
    if n_bad:
        raise KernelInputError(
            f"linear_cross_entropy: {n_bad} labels are outside [0, {vocab}) and not ignore_index={ignore_index}."
        )
    chunk = chunk_size or default_chunk_size(hidden2.shape[0], vocab, weight.shape[1])
    args = (ignore_index, reduction, float(label_smoothing), float(z_loss), chunk, n_valid)
    if resolve_impl(impl, hidden, op="linear_cross_entropy") == "reference":
        # The Function directly: linear_cross_entropy_reference would count the valid labels again (a host sync).
        return LinearCrossEntropyReferenceFunction.apply(hidden2, weight, labels1, *args)
    if hidden.dtype not in _TRITON_DTYPES:
        raise KernelUnavailableError(
            f"linear_cross_entropy: impl='triton' supports float16/bfloat16/float32, got {hidden.dtype}."
        )
    return load_kernels("linear_cross_entropy").linear_cross_entropy_triton(
        hidden2, weight, labels1, ignore_index=ignore_index, reduction=reduction,
        label_smoothing=float(label_smoothing), z_loss=float(z_loss), chunk_size=chunk, n_valid=n_valid,
    )  # fmt: skip


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
        raise KernelInputError(
            f"rote: hidden must be (windows, tokens, channels) and timestamps (windows, tokens); got "
            f"{tuple(hidden.shape)} and {tuple(timestamps.shape)}."
        )
    if axis_dim <= 0 or axis_dim % 2 or hidden.shape[-1] < 2 * axis_dim:
        raise KernelInputError(
            f"rote: axis_dim must be positive, even and at most half the channels ({hidden.shape[-1]}); got {axis_dim}."
        )
    if timestamps.device != hidden.device:
        raise KernelInputError(
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
    if hidden.dtype not in _TRITON_DTYPES:
        raise KernelUnavailableError(
            f"rote: impl='triton' supports float16/bfloat16/float32, got {hidden.dtype}."
        )
    return load_kernels("rote").rote_triton(hidden, timestamps, **kwargs)
