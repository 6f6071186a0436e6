"""Sequence parallelism: one long packed row spread over several ranks (Ulysses inside a node, Ring across).

The row is split along the sequence: outside attention each rank holds ``L / N`` tokens. Around attention:

* **Ulysses** (DeepSpeed-Ulysses, Jacobs et al. 2023): an all-to-all over heads gives each of the ``U`` ranks of a
  Ulysses group every token of its part of the row for ``H / U`` heads, so the varlen kernel and the row's
  ``cu_seqlens`` work unchanged; a second all-to-all returns the output to the sequence split. With fewer
  key/value heads than ``U`` (GQA), key/value heads are repeated so each rank's query heads find theirs.
* **Ring** (Liu et al. 2023): across the ``R`` ranks of a ring, key / value blocks travel around the ring while
  each rank attends its queries to each block and merges the partial outputs by their log-sum-exp; the backward
  pass sends the key / value gradients around the ring the same way. Causal load is balanced by the zigzag split
  (rank ``r`` holds chunks ``r`` and ``2R - 1 - r`` of ``2R``), so every rank has as much work.
* **Hybrid**: ``N = R x U``; the row is zigzag-split over the ring, each ring rank's part split over its Ulysses
  group; Ulysses gathers the ring rank's part for ``H / U`` heads, the ring pass runs on those heads.

The block attention of the ring pass is computed here in PyTorch, head by head, from the tokens' global positions
and documents (a packed row's samples stay apart); it is tested against the one-process computation. Every
collective is a ``torch.distributed`` one on the strategy's process groups, so any launcher works.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from afnext.errors import ConfigError

__all__ = [
    "SP_ATTENTION",
    "SequenceGroup",
    "active_layout",
    "check_heads",
    "gather_windows",
    "register_sequence_parallel_attention",
    "sequence_layout",
    "sequence_parallel_attention_forward",
    "spread_windows",
]

SP_ATTENTION = "afnext_sequence_parallel"


@dataclass(frozen=True)
class SequenceGroup:
    """The ranks that share one sequence.

    Attributes:
        ulysses: Process group of this rank's Ulysses group (``None`` when ``ulysses_size`` is 1).
        ring: Process group of this rank's ring (``None`` when ``ring_size`` is 1).
        group: Process group of all ``ulysses_size x ring_size`` ranks.
    """

    ulysses: Any
    ulysses_size: int
    ulysses_rank: int
    ring: Any
    ring_size: int
    ring_rank: int
    group: Any

    @property
    def size(self) -> int:
        return self.ulysses_size * self.ring_size

    @property
    def rank(self) -> int:
        return self.ring_rank * self.ulysses_size + self.ulysses_rank


def check_heads(num_heads: int, ulysses_size: int, where: str = "the LLM") -> None:
    """Ulysses splits the query heads evenly over its group.

    Raises:
        ConfigError: ``ulysses_size`` does not divide ``num_heads``; names the degrees that work.
    """
    if num_heads % ulysses_size:
        works = [d for d in range(1, num_heads + 1) if num_heads % d == 0]
        raise ConfigError(
            f"trainer.sequence_parallel / trainer.ring_size give a Ulysses degree of {ulysses_size}, which does "
            f"not divide the {num_heads} attention heads of {where}; Ulysses degrees that work: {works} (the "
            "rest of the degree can be a ring: trainer.ring_size)"
        )


@dataclass
class SequenceLayout:
    """Where this rank's tokens sit in the padded row, and the row's documents (for the ring pass).

    Attributes:
        length: Padded row length ``L'`` (a multiple of the split).
        ring_part: ``(L' / R,)`` global positions held by this rank's ring rank (both zigzag chunks), in order.
        local: ``(L' / N,)`` global positions held by this rank.
        documents: ``(L',)`` document id of every position (padding is a document of its own).
        cu_seqlens: ``(docs + 1,)`` int32 cumulative document lengths of the whole row.
    """

    length: int
    ring_part: torch.Tensor
    local: torch.Tensor
    documents: torch.Tensor
    cu_seqlens: torch.Tensor
    group: SequenceGroup
    extra: dict[str, Any] = field(default_factory=dict)


_ACTIVE: ContextVar[SequenceLayout | None] = ContextVar("afnext_sequence_layout", default=None)


def sequence_layout(group: SequenceGroup, cu_seqlens: torch.Tensor) -> SequenceLayout:
    """The layout of a row whose documents are ``cu_seqlens`` (its length a multiple of the split)."""
    length = int(cu_seqlens[-1])
    device = cu_seqlens.device
    positions = torch.arange(length, device=device)
    if group.ring_size > 1:
        chunks = positions.view(2 * group.ring_size, -1)
        ring_part = torch.cat(
            [chunks[group.ring_rank], chunks[2 * group.ring_size - 1 - group.ring_rank]]
        )
    else:
        ring_part = positions
    local = ring_part.view(group.ulysses_size, -1)[group.ulysses_rank]
    documents = torch.repeat_interleave(
        torch.arange(cu_seqlens.numel() - 1, device=device), cu_seqlens.diff().to(torch.long)
    )
    return SequenceLayout(length, ring_part, local, documents, cu_seqlens.to(torch.int32), group)


def split_multiple(group: SequenceGroup) -> int:
    """The padded row length must be a multiple of this."""
    return group.ulysses_size * (2 * group.ring_size if group.ring_size > 1 else 1)


@contextmanager
def active_layout(layout: SequenceLayout):  # type: ignore[no-untyped-def]
    """Run the LLM with this layout: its attention layers gather and scatter through the group."""
    token = _ACTIVE.set(layout)
    try:
        yield layout
    finally:
        _ACTIVE.reset(token)


# --------------------------------------------------------------------------------------------------
# Ulysses: all-to-all between the sequence split and the head split
# --------------------------------------------------------------------------------------------------
def _all_to_all(send: torch.Tensor, group: SequenceGroup) -> torch.Tensor:
    """Equal chunks of ``send``'s dim 0 exchanged over the Ulysses group, differentiably (the backward is
    the reverse exchange)."""
    from torch.distributed._functional_collectives import all_to_all_single_autograd, wait_tensor

    return wait_tensor(all_to_all_single_autograd(send, None, None, group.ulysses))


def _seq_to_heads(x: torch.Tensor, group: SequenceGroup) -> torch.Tensor:
    """``(B, H, L_local, d)`` -> ``(B, H / U, U * L_local, d)``: every rank's tokens for this rank's heads."""
    u = group.ulysses_size
    b, h, l_local, d = x.shape
    send = (
        x.reshape(b, u, h // u, l_local, d).transpose(0, 1).contiguous()
    )  # (U, B, H/U, L_local, d)
    recv = _all_to_all(send, group)  # dim 0: source rank
    return recv.permute(1, 2, 0, 3, 4).reshape(b, h // u, u * l_local, d)


def _heads_to_seq(x: torch.Tensor, group: SequenceGroup) -> torch.Tensor:
    """``(B, L, H / U, d)`` -> ``(B, L / U, H, d)``: back to this rank's tokens, every head."""
    u = group.ulysses_size
    b, length, h_local, d = x.shape
    send = (
        x.reshape(b, u, length // u, h_local, d).transpose(0, 1).contiguous()
    )  # (U, B, L/U, H/U, d)
    recv = _all_to_all(send, group)  # dim 0: source head group
    return recv.permute(1, 2, 0, 3, 4).reshape(b, length // u, u * h_local, d)


def _expand_kv(
    key: torch.Tensor, value: torch.Tensor, heads: int, u: int
) -> tuple[torch.Tensor, ...]:
    """Repeat key / value heads so their count is a multiple of ``u`` that divides the query heads (GQA with
    fewer key/value heads than ranks: each rank then holds the key/value heads of its query heads)."""
    kv = key.shape[1]
    repeat = u // math.gcd(kv, u)
    if repeat == 1:
        return key, value
    if heads % (kv * repeat):
        raise ConfigError(
            f"cannot spread {kv} key/value heads for {heads} query heads over {u} ranks"
        )
    return key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)


def sequence_parallel_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers ``AttentionInterface`` function: Ulysses (and Ring) around afnext's varlen attention.

    Outside a sequence-parallel forward (generation, a plain forward) it is afnext's varlen attention.

    Args:
        query: ``(B, H, L_local, d)`` after rotary.
        key / value: ``(B, H_kv, L_local, d)``.
        **kwargs: transformers' attention kwargs (the row's ``cu_seq_lens_q/k`` and ``max_length_q/k``).

    Returns:
        ``(B, L_local, H, d)`` and None.
    """
    from afnext_kernels.hf import afnext_varlen_attention_forward

    layout = _ACTIVE.get()
    if layout is None:
        return afnext_varlen_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    group = layout.group
    heads = query.shape[1]
    check_heads(heads, group.ulysses_size)
    scale = query.shape[-1] ** -0.5 if scaling is None else float(scaling)
    key, value = _expand_kv(key, value, heads, group.ulysses_size)
    if group.ulysses_size > 1:
        query, key, value = (_seq_to_heads(t, group) for t in (query, key, value))
    if group.ring_size > 1:
        from afnext.llms.ring_attention import ring_attention

        out = ring_attention(query, key, value, layout, scale)  # (B, L_ring, H/U, d)
    else:
        cu = layout.cu_seqlens.to(query.device)
        longest = int(cu.diff().max())
        out, _ = afnext_varlen_attention_forward(
            module, query, key, value, None, dropout=dropout, scaling=scale, is_causal=True,
            cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest,
        )  # fmt: skip
    if group.ulysses_size > 1:
        out = _heads_to_seq(out, group)
    return out, None


def register_sequence_parallel_attention() -> str:
    """Register :func:`sequence_parallel_attention_forward` with transformers (its mask: none, as varlen)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(SP_ATTENTION, sequence_parallel_attention_forward)
    AttentionMaskInterface.register(SP_ATTENTION, flash_attention_mask)
    return SP_ATTENTION


# --------------------------------------------------------------------------------------------------
# The encoder's windows spread over the group
# --------------------------------------------------------------------------------------------------
def spread_windows(
    features: torch.Tensor, mask: torch.Tensor, group: SequenceGroup
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """This rank's share of the audio windows (windows are independent): padded to a multiple of the group
    with copies of a one-frame window, so every rank encodes as many.

    Returns:
        ``(features (W / N, ...), mask (W / N, F), W)`` with ``W`` the real window count.
    """
    total, n = features.shape[0], group.size
    padded = -(-total // n) * n
    if padded != total:
        filler = features[:1].expand(padded - total, *features.shape[1:]).clone()
        filler_mask = torch.zeros(
            padded - total, mask.shape[1], dtype=mask.dtype, device=mask.device
        )
        filler_mask[:, 0] = (
            1  # one real frame: attention over nothing but padding would be undefined
        )
        features, mask = torch.cat([features, filler]), torch.cat([mask, filler_mask])
    share = padded // n
    start = group.rank * share
    return features[start : start + share], mask[start : start + share], total


def gather_windows(
    hidden: torch.Tensor, mask: torch.Tensor, total: int, group: SequenceGroup
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's encoded windows, in order (differentiable: each window's gradient returns to its rank).

    An encoder may return fewer positions for a share of short windows (AF-Whisper skips padding no valid token
    depends on): shares are padded to the group's longest, with masked positions."""
    from torch.distributed.nn.functional import all_gather

    longest = torch.tensor([hidden.shape[1]], device=hidden.device)
    dist.all_reduce(longest, op=dist.ReduceOp.MAX, group=group.group)
    extra = int(longest) - hidden.shape[1]
    if extra:
        hidden = torch.nn.functional.pad(hidden, (0, 0, 0, extra))
        mask = torch.nn.functional.pad(mask, (0, extra))
    parts = all_gather(hidden.contiguous(), group=group.group)
    masks = [torch.empty_like(mask) for _ in range(group.size)]
    dist.all_gather(masks, mask.contiguous(), group=group.group)
    return torch.cat(parts)[:total], torch.cat(masks)[:total]


# --------------------------------------------------------------------------------------------------
# A batch as one padded row
# --------------------------------------------------------------------------------------------------
@dataclass
class PackedRow:
    """A batch flattened into one row of its real tokens, padded to the split (see :func:`pack_row`).

    Attributes:
        embeds: ``(L', D)``; positions: ``(L',)`` restarting per sample; targets: ``(L',)`` already shifted;
        samples: ``(L',)`` the batch row (sample) of each position, -1 for padding; cu_seqlens: ``(docs + 1,)``.
    """

    embeds: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor
    samples: torch.Tensor
    cu_seqlens: torch.Tensor


def pack_row(
    embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor | None,
    targets: torch.Tensor,
    multiple: int,
) -> PackedRow:
    """Flatten ``(B, L)`` rows (right-padded, or packed with restarting ``position_ids``) into one row of their
    real tokens, documents kept apart, padded with a dummy document to a multiple of ``multiple``.

    Args:
        embeds: ``(B, L, D)`` input embeddings (audio spliced in).
        attention_mask: ``(B, L)`` or None (all real).
        position_ids: ``(B, L)`` or None (``0 .. n-1`` per row).
        targets: ``(B, L)`` next-token targets (already shifted per row, so none crosses a row).
        multiple: The split's multiple (:func:`split_multiple`).
    """
    from afnext.llms.packing import document_starts

    batch, length = targets.shape
    real = (
        torch.ones_like(targets, dtype=torch.bool)
        if attention_mask is None
        else attention_mask.to(targets.device).bool()
    )
    if position_ids is None:
        position_ids = (real.long().cumsum(-1) - 1).clamp(min=0)
    starts = document_starts(position_ids.to(targets.device)) & real
    rows = torch.arange(batch, device=targets.device)[:, None].expand(batch, length)
    flat = PackedRow(
        embeds=embeds[real], positions=position_ids.to(targets.device)[real], targets=targets[real],
        samples=rows[real], cu_seqlens=torch.nonzero(starts[real]).reshape(-1),
    )  # fmt: skip
    total = flat.targets.numel()
    pad = -total % multiple
    if pad:
        device = flat.targets.device
        flat.embeds = torch.cat([flat.embeds, flat.embeds.new_zeros(pad, flat.embeds.shape[-1])])
        flat.positions = torch.cat([flat.positions, torch.arange(pad, device=device)])
        flat.targets = torch.cat([flat.targets, flat.targets.new_full((pad,), -100)])
        flat.samples = torch.cat([flat.samples, flat.samples.new_full((pad,), -1)])
        flat.cu_seqlens = torch.cat([flat.cu_seqlens, flat.cu_seqlens.new_tensor([total])])
    flat.cu_seqlens = torch.cat([flat.cu_seqlens, flat.cu_seqlens.new_tensor([total + pad])]).to(
        torch.int32
    )
    return flat
