"""Variable-length (packed) flash attention: public entry point, reference and Triton implementations."""

from __future__ import annotations

import torch

from afnext_kernels.attention.reference import attention_mask_band, flash_attn_varlen_reference
from afnext_kernels.dispatch import ATTENTION_IMPLS, resolve_impl
from afnext_kernels.errors import InputError, KernelUnavailableError

__all__ = ["attention_mask_band", "flash_attn_varlen", "flash_attn_varlen_reference"]

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
        raise InputError(
            "flash_attn_varlen: q, k, v must be (total_tokens, heads, dim); got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}. Flatten (batch, seq) into tokens first."
        )
    if k.shape != v.shape or q.shape[2] != k.shape[2]:
        raise InputError(
            f"flash_attn_varlen: k {tuple(k.shape)} and v {tuple(v.shape)} must match, and share q's head "
            f"dim {q.shape[2]}."
        )
    if k.shape[1] == 0 or q.shape[1] % k.shape[1]:
        raise InputError(
            f"flash_attn_varlen: query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})."
        )
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise InputError(
            f"flash_attn_varlen: q, k, v must share dtype and device; got {q.dtype}/{k.dtype}/{v.dtype} on "
            f"{q.device}/{k.device}/{v.device}."
        )
    for name, cu in (("cu_seqlens", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if cu.ndim != 1 or cu.numel() < 1 or cu.dtype not in (torch.int32, torch.int64):
            raise InputError(
                f"flash_attn_varlen: {name} must be a 1-D int32 tensor of batch + 1 cumulative lengths starting "
                f"at 0; got {cu.dtype} of shape {tuple(cu.shape)}."
            )
        if cu.device != q.device:
            raise InputError(f"flash_attn_varlen: {name} is on {cu.device} but q is on {q.device}.")
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise InputError(
            "flash_attn_varlen: cu_seqlens and cu_seqlens_k must describe the same number of sequences; got "
            f"{cu_seqlens_q.numel() - 1} and {cu_seqlens_k.numel() - 1}."
        )
    if len(window) != 2 or any(int(w) < -1 for w in window):
        raise InputError(
            f"flash_attn_varlen: window must be (left, right) with -1 for unbounded; got {window}."
        )


def _check_lengths(cu: torch.Tensor, total: int, max_seqlen: int, name: str) -> None:
    # Only where reading the lengths costs no device sync (CPU tensors); on CUDA they are trusted as
    # flash-attn trusts them, since a check would stall every layer.
    lengths = cu.diff()
    if int(cu[0]) != 0 or int(cu[-1]) != total or bool((lengths < 0).any()):
        raise InputError(
            f"flash_attn_varlen: {name} must rise from 0 to the token count {total}; got {cu.tolist()}."
        )
    if lengths.numel() and int(lengths.max()) > max_seqlen:
        raise InputError(
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
        impl: ``"auto"`` (Triton on CUDA, reference elsewhere, see :mod:`afnext_kernels.dispatch`),
            ``"triton"``, ``"reference"``, ``"xformers"`` or ``"flash_attn"``.
        cu_seqlens_k: ``(batch + 1,)`` cumulative key lengths when they differ from the queries'.
        max_seqlen_k: Longest key sequence (required with ``cu_seqlens_k``).
        return_lse: Also return the log-sum-exp (not differentiable).

    Returns:
        ``(total_q, heads, dim)`` in ``q``'s dtype, and with ``return_lse`` also ``(heads, total_q)`` float32
        natural-log log-sum-exp of the scaled scores (``-inf`` for a query that sees no key).
    """
    if (cu_seqlens_k is None) != (max_seqlen_k is None):
        raise InputError(
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
        from afnext_kernels.attention.function import flash_attn_varlen_triton

        if q.dtype not in _TRITON_DTYPES or q.shape[-1] > _MAX_TRITON_HEAD_DIM:
            raise KernelUnavailableError(
                f"flash_attn_varlen: impl='triton' supports float16/bfloat16/float32 and head dim <= "
                f"{_MAX_TRITON_HEAD_DIM}; got {q.dtype}, head dim {q.shape[-1]}. Use impl='reference'."
            )
        out, lse = flash_attn_varlen_triton(
            q, k, v, cu_seqlens.to(torch.int32), cu_seqlens_k.to(torch.int32), int(max_seqlen),
            int(max_seqlen_k), causal=causal, window=window, softmax_scale=scale,
        )  # fmt: skip
    else:
        from afnext_kernels.backends import run_backend

        out, lse = run_backend(
            chosen, q, k, v, cu_seqlens, cu_seqlens_k, int(max_seqlen), int(max_seqlen_k),
            causal=causal, window=window, softmax_scale=scale, return_lse=return_lse,
        )  # fmt: skip
    return (out, lse) if return_lse else out
