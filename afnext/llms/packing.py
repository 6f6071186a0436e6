"""Packed rows (several samples in one row) reach every attention back end with their documents kept apart.

transformers' convention for packing (``DataCollatorWithFlattening``): a row holds several samples back to back,
``position_ids`` restart at 0 at each sample, and there is no padding mask. Back ends separate the samples in
different ways, and a model that ignores ``position_ids`` lets them see each other:

* ``afnext_varlen`` and ``flash_attention_2`` / ``_3``: ``cu_seq_lens_q/k`` and ``max_length_q/k`` (the
  ``FlashAttentionKwargs`` transformers passes down to every attention layer) describe the documents of all
  rows, flattened; they are computed here once per forward instead of once per layer.
* ``sdpa``, ``eager`` and ``flex_attention``: transformers' ``create_causal_mask`` builds a block-diagonal causal
  mask from ``position_ids`` (``find_packed_sequence_indices`` in ``masking_utils.py``) when the padding mask is
  None and there is no KV cache; so the all-ones mask is dropped and the cache turned off. The mask is
  ``O(L^2)``: fine for short rows, while long packed rows want a varlen back end.
* any other back end: refused, since afnext cannot tell whether it keeps documents apart.

A document starts wherever a position is not the previous one plus 1 (the same rule as transformers'
``find_packed_sequence_indices``), and at the start of every row.
"""

from __future__ import annotations

from typing import Any

import torch

from afnext.errors import ConfigError, InputError

__all__ = ["MASK_PACKING", "VARLEN_PACKING", "document_starts", "packed_attention_kwargs"]

VARLEN_PACKING = (
    "afnext_varlen",
    "afnext_sequence_parallel",
    "flash_attention_2",
    "flash_attention_3",
)
"""Back ends that read ``cu_seq_lens_q/k`` (packed documents in one varlen call)."""
MASK_PACKING = ("sdpa", "eager", "flex_attention")
"""Back ends for which transformers builds a block-diagonal mask from restarting ``position_ids``."""


def document_starts(position_ids: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` bool: where a packed document starts (row starts, and positions that do not continue)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    return starts


def packed_attention_kwargs(
    attn_implementation: str | None,
    position_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    *,
    has_cache: bool = False,
) -> tuple[torch.Tensor | None, dict[str, Any]]:
    """The attention mask and extra LLM kwargs for a batch that may hold packed rows.

    Args:
        attn_implementation: The LLM's attention back end.
        position_ids: ``(B, L)`` or None.
        attention_mask: ``(B, L)`` padding mask or None.
        has_cache: A KV cache is in use (generation): never packed.

    Returns:
        ``(attention_mask, kwargs)``: the mask to give the LLM (None for packed rows) and the kwargs to add
        (``use_cache=False`` and, for varlen back ends, ``cu_seq_lens_q/k``, ``max_length_q/k``). An unpacked
        batch comes back unchanged with no kwargs.

    Raises:
        InputError: Packed rows with a padding mask that has zeros (packed rows are all real tokens; their
            padding tail is a dummy document).
        ConfigError: Packed rows under a back end that cannot keep the documents apart.
    """
    if position_ids is None or has_cache or position_ids.ndim != 2 or position_ids.shape[1] < 2:
        return attention_mask, {}
    starts = document_starts(position_ids)
    if int(starts.sum()) == position_ids.shape[0]:  # one document per row: not packed
        return attention_mask, {}
    if attention_mask is not None and not bool(attention_mask.bool().all()):
        # A padded batch (left padding repeats position 0 over the pads) is not packed; a restart between
        # two real tokens is.
        real = attention_mask.bool()
        if bool((starts[:, 1:] & real[:, 1:] & real[:, :-1]).any()):
            raise InputError(
                "a packed batch (position_ids restart between real tokens of a row) came with a padding mask "
                "that has zeros; packed rows are all real tokens: give attention_mask=None or all ones "
                "(afnext's collator does)"
            )
        return attention_mask, {}
    if attn_implementation in MASK_PACKING:
        return None, {"use_cache": False}
    if attn_implementation in VARLEN_PACKING:
        flat = torch.nonzero(starts.reshape(-1)).reshape(-1)
        total = position_ids.numel()
        cu = torch.cat([flat, flat.new_tensor([total])]).to(torch.int32)
        longest = int(cu.diff().max())
        return None, {
            "use_cache": False,
            "cu_seq_lens_q": cu,
            "cu_seq_lens_k": cu,
            "max_length_q": longest,
            "max_length_k": longest,
        }
    raise ConfigError(
        f"a packed batch (data.pack=true: several samples per row, position_ids restarting) reached an LLM with "
        f"attn_implementation={attn_implementation!r}, which afnext cannot tell keeps the samples apart. Use "
        f"llm.attn_implementation=afnext_varlen (or one of {VARLEN_PACKING + MASK_PACKING}), or data.pack=false"
    )
