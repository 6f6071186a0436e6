"""Ring attention over a ring of ranks, for one packed row split along the sequence (zigzag).

Forward: each rank attends its queries to its own key/value block, then to each block the ring passes on, and
merges the partial outputs by their log-sum-exp (``out = sum_i exp(lse_i - lse) out_i``). Backward (the
flash-attention formulas with the final ``lse``): ``P = exp(S - lse)``, ``dV = P^T dO``, ``dS = P * (dO V^T - D)``
with ``D = rowsum(dO * O)``, ``dQ = dS K``, ``dK = dS^T Q``; the key/value gradients travel with their blocks and
return to their owner after a full turn. Each block is computed here in PyTorch, head by head, with the mask of
the packed row: a query sees keys of its own document at or before its position.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["merge_blocks", "ring_attention"]


def _mask(q_pos: torch.Tensor, k_pos: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """``(Lq, Lk)`` bool: causal within a document."""
    same = documents[q_pos][:, None] == documents[k_pos][None, :]
    return same & (k_pos[None, :] <= q_pos[:, None])


def _block_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial attention of ``q (H, Lq, d)`` on one block: output ``(H, Lq, d)`` fp32 and lse ``(H, Lq)``."""
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    lse = torch.full(q.shape[:2], float("-inf"), dtype=torch.float32, device=q.device)
    if not bool(mask.any()):
        return out, lse
    for h in range(q.shape[0]):  # one head at a time bounds the (Lq, Lk) scores
        scores = (q[h].float() @ k[h].float().t()) * scale
        scores = scores.masked_fill(~mask, float("-inf"))
        lse[h] = torch.logsumexp(scores, dim=-1)
        probs = torch.exp(scores - lse[h][:, None].clamp(min=-1e30)).nan_to_num(0.0)
        out[h] = probs @ v[h].float()
    return out, lse


def _block_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    d_out: torch.Tensor,
    lse: torch.Tensor,
    delta: torch.Tensor,
    mask: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of one block given the final ``lse`` and ``delta = rowsum(dO * O)``."""
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dk = torch.zeros(k.shape, dtype=torch.float32, device=q.device)
    dv = torch.zeros(v.shape, dtype=torch.float32, device=q.device)
    if not bool(mask.any()):
        return dq, dk, dv
    for h in range(q.shape[0]):
        scores = (q[h].float() @ k[h].float().t()) * scale
        probs = torch.exp(scores - lse[h][:, None]).masked_fill(~mask, 0.0).nan_to_num(0.0)
        dv[h] = probs.t() @ d_out[h]
        d_probs = d_out[h] @ v[h].float().t()
        d_scores = probs * (d_probs - delta[h][:, None])
        dq[h] = (d_scores @ k[h].float()) * scale
        dk[h] = (d_scores.t() @ q[h].float()) * scale
    return dq, dk, dv


def merge_blocks(
    out: torch.Tensor, lse: torch.Tensor, block_out: torch.Tensor, block_lse: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a block's partial attention into the running one by their log-sum-exp (a query that has seen
    no key yet, ``lse = -inf``, takes the block's as it is)."""
    merged = torch.logaddexp(lse, block_lse)
    finite = torch.isfinite(merged)
    w_old = torch.where(finite, torch.exp(lse - merged), torch.zeros_like(lse))
    w_new = torch.where(finite, torch.exp(block_lse - merged), torch.zeros_like(lse))
    return out * w_old[..., None] + block_out * w_new[..., None], merged


def _pass_on(tensors: list[torch.Tensor], group: Any, rank: int, size: int) -> list[torch.Tensor]:
    """Send ``tensors`` to the next rank of the ring and receive the previous rank's."""
    send_to = dist.get_global_rank(group, (rank + 1) % size)
    recv_from = dist.get_global_rank(group, (rank - 1) % size)
    received = [torch.empty_like(t) for t in tensors]
    ops = [dist.P2POp(dist.isend, t.contiguous(), send_to, group) for t in tensors]
    ops += [dist.P2POp(dist.irecv, r, recv_from, group) for r in received]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        documents: torch.Tensor,
        scale: float,
        group: Any,
        rank: int,
        size: int,
    ) -> torch.Tensor:
        out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        lse = torch.full(q.shape[:2], float("-inf"), dtype=torch.float32, device=q.device)
        k_cur, v_cur, pos_cur = k, v, positions
        for step in range(size):
            o_b, lse_b = _block_forward(
                q, k_cur, v_cur, _mask(positions, pos_cur, documents), scale
            )
            out, lse = merge_blocks(out, lse, o_b, lse_b)
            if step < size - 1:
                k_cur, v_cur, pos_cur = _pass_on([k_cur, v_cur, pos_cur], group, rank, size)
        ctx.save_for_backward(q, k, v, out, lse, positions, documents)
        ctx.scale, ctx.group, ctx.rank, ctx.size = scale, group, rank, size
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx: Any, d_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        q, k, v, out, lse, positions, documents = ctx.saved_tensors
        d_out = d_out.float()
        delta = (d_out * out).sum(-1)  # (H, Lq)
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        k_cur, v_cur, pos_cur = k, v, positions
        dk_cur = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
        dv_cur = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
        for _ in range(ctx.size):
            mask = _mask(positions, pos_cur, documents)
            dq_b, dk_b, dv_b = _block_backward(q, k_cur, v_cur, d_out, lse, delta, mask, ctx.scale)
            dq += dq_b
            dk_cur, dv_cur = dk_cur + dk_b, dv_cur + dv_b
            # The block and its gradient move on together; after a full turn each is home again.
            k_cur, v_cur, pos_cur, dk_cur, dv_cur = _pass_on(
                [k_cur, v_cur, pos_cur, dk_cur, dv_cur], ctx.group, ctx.rank, ctx.size
            )
        return dq.to(q.dtype), dk_cur.to(k.dtype), dv_cur.to(v.dtype), *([None] * 6)


def ring_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: Any, scale: float
) -> torch.Tensor:
    """Causal attention of this ring rank's part of a packed row over the whole row.

    Args:
        query: ``(1, H, L_part, d)``.
        key / value: ``(1, H_kv, L_part, d)`` (repeated here to ``H`` heads for grouped-query attention).
        layout: The row's :class:`afnext.llms.sequence_parallel.SequenceLayout`.
        scale: Softmax scale.

    Returns:
        ``(1, L_part, H, d)``.
    """
    heads = query.shape[1]
    if key.shape[1] != heads:
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        value = value.repeat_interleave(heads // value.shape[1], dim=1)
    group = layout.group
    positions = layout.ring_part.to(query.device)
    documents = layout.documents.to(query.device)
    out = _RingAttention.apply(
        query[0], key[0], value[0], positions, documents, float(scale), group.ring, group.ring_rank,
        group.ring_size,
    )  # fmt: skip
    return out.transpose(0, 1).unsqueeze(0)  # (1, L_part, H, d)
