"""Pure-PyTorch variable-length attention: the spec of the Triton kernel, and the CPU path.

Semantics follow flash-attn's ``flash_attn_varlen_func`` (Dao, FlashAttention-2, arXiv 2307.08691):
sequence ``b`` owns query rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` and key rows
``cu_seqlens_k[b]:cu_seqlens_k[b+1]``; query ``i`` of a sequence sits at key position ``i + (len_k - len_q)``
(bottom-right alignment, so a decode step with a KV cache sees the whole cache), and attends key ``j`` iff
``i + off - left <= j <= i + off + right`` where ``left`` / ``right`` of ``-1`` are unbounded and ``causal``
sets ``right = 0``. Query head ``h`` reads key/value head ``h // (heads / kv_heads)`` (grouped-query
attention). A query that sees no key returns zeros and a log-sum-exp of ``-inf``.
"""

from __future__ import annotations

import math

import torch

from afnext_kernels.errors import KernelInputError

__all__ = ["attention_mask_band", "flash_attn_varlen_reference"]


def attention_mask_band(
    len_q: int,
    len_k: int,
    *,
    causal: bool,
    window: tuple[int, int],
    device: torch.device | None = None,
    q_offset: int = 0,
    q_rows: int | None = None,
) -> torch.Tensor:
    """Boolean ``(rows, len_k)`` mask of which keys each query of one sequence attends.

    Args:
        len_q: Queries in the sequence.
        len_k: Keys in the sequence.
        causal: Forbid keys after the query's aligned position.
        window: ``(left, right)``; ``-1`` is unbounded.
        device: Where to build the mask.
        q_offset: First query row to build (for chunking over queries).
        q_rows: Rows to build (default: ``len_q - q_offset``).

    Returns:
        ``(q_rows, len_k)`` bool, True where attention is allowed.
    """
    left, right = window
    if causal:
        right = 0
    rows = len_q - q_offset if q_rows is None else q_rows
    pos = torch.arange(q_offset, q_offset + rows, device=device)[:, None] + (
        len_k - len_q
    )  # (rows, 1)
    keys = torch.arange(len_k, device=device)[None, :]  # (1, len_k)
    allowed = torch.ones(rows, len_k, dtype=torch.bool, device=device)
    if left >= 0:
        allowed &= keys >= pos - left
    if right >= 0:
        allowed &= keys <= pos + right
    return allowed


def flash_attn_varlen_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    *,
    causal: bool = False,
    window: tuple[int, int] = (-1, -1),
    softmax_scale: float | None = None,
    query_chunk: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over packed sequences, materialising one ``(heads, chunk, len_k)`` score block at a time.

    Differentiable through ordinary autograd. Scores and softmax run in float32 whatever the input dtype.

    Args:
        q: ``(total_q, heads, dim)``.
        k: ``(total_k, kv_heads, dim)``; ``heads % kv_heads == 0``.
        v: ``(total_k, kv_heads, dim)``.
        cu_seqlens_q: ``(batch + 1,)`` int cumulative query lengths starting at 0.
        cu_seqlens_k: ``(batch + 1,)`` int cumulative key lengths starting at 0.
        causal: Causal mask (bottom-right aligned).
        window: ``(left, right)`` sliding window, ``-1`` unbounded.
        softmax_scale: Score scale (default ``dim ** -0.5``).
        query_chunk: Queries per materialised score block (bounds memory, not results).

    Returns:
        ``out`` ``(total_q, heads, dim)`` in ``q``'s dtype and ``lse`` ``(heads, total_q)`` float32 natural-log
        log-sum-exp of the scaled scores (``-inf`` for queries that see no key).
    """
    total_q, heads, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    scale = dim**-0.5 if softmax_scale is None else softmax_scale
    starts_q, starts_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    outs, lses = [], []
    for b in range(len(starts_q) - 1):
        q0, q1, k0, k1 = starts_q[b], starts_q[b + 1], starts_k[b], starts_k[b + 1]
        len_q, len_k = q1 - q0, k1 - k0
        kb = k[k0:k1].float().repeat_interleave(group, dim=1).transpose(0, 1)  # (H, Lk, D)
        vb = v[k0:k1].float().repeat_interleave(group, dim=1).transpose(0, 1)  # (H, Lk, D)
        for c0 in range(0, len_q, query_chunk):
            rows = min(query_chunk, len_q - c0)
            qb = q[q0 + c0 : q0 + c0 + rows].float().transpose(0, 1)  # (H, rows, D)
            scores = torch.matmul(qb, kb.transpose(1, 2)) * scale  # (H, rows, Lk)
            allowed = attention_mask_band(
                len_q,
                len_k,
                causal=causal,
                window=window,
                device=q.device,
                q_offset=c0,
                q_rows=rows,
            )
            scores = scores.masked_fill(~allowed, -math.inf)
            lse = torch.logsumexp(scores, dim=-1)  # (H, rows), -inf where a row sees nothing
            # exp(-inf - -inf) would be NaN; such rows have no allowed key, give them weight 0.
            probs = torch.exp(scores - lse.masked_fill(torch.isinf(lse), 0.0)[..., None])
            out = torch.matmul(probs, vb)  # (H, rows, D)
            outs.append(out.transpose(0, 1))
            lses.append(lse)
    if not outs:
        return q.new_zeros(q.shape), q.new_zeros((heads, 0), dtype=torch.float32)
    out = torch.cat(outs, dim=0).to(q.dtype)
    lse = torch.cat(lses, dim=1)
    if out.shape[0] != total_q:
        raise KernelInputError(f"cu_seqlens_q covers {out.shape[0]} query rows but q has {total_q}")
    return out, lse
