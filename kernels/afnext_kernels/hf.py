"""``transformers`` integration: ``attn_implementation="afnext_varlen"`` runs attention as one packed varlen call.

Mirrors how transformers feeds FlashAttention-2 (``transformers/modeling_flash_attention_utils.py``,
``_flash_attention_forward``): the mask function registered beside the attention function is transformers'
own ``flash_attention_mask``, so models hand over either no mask or the 2-D key-padding mask; then
* with a 2-D mask (padded batches: the AF-Whisper encoder's windows, left- or right-padded prompts, decode steps
  of a padded batch), the valid tokens of every row are gathered into one packed call and scattered back
  (padded query rows come back as zeros, as with flash-attn);
* without a mask, ``cu_seq_lens_q/k`` + ``max_length_q/k`` kwargs (padding-free training) are used as given, or
  packed sequences are read from ``position_ids`` that restart (batch of one), or every row is one sequence;
  a decode step with a KV cache has fewer queries than keys and is bottom-right aligned.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from afnext_kernels.errors import KernelInputError
from afnext_kernels.functional import flash_attn_varlen

__all__ = ["DEFAULT_NAME", "afnext_varlen_attention_forward", "register"]

DEFAULT_NAME = "afnext_varlen"


def _cu_seqlens(lengths: torch.Tensor) -> torch.Tensor:
    return F.pad(torch.cumsum(lengths, dim=0, dtype=torch.int32), (1, 0))


def _unpad(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Flat indices of valid tokens, cumulative lengths, longest row (as transformers' ``_get_unpad_data``)."""
    lengths = mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
    return indices, _cu_seqlens(lengths), int(lengths.max())


def _packed_from_position_ids(
    position_ids: torch.Tensor, total: int
) -> tuple[torch.Tensor, int] | None:
    """Sequence starts of a batch-of-one pack from restarting ``position_ids``; None when there is one sequence."""
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == flat.min(), as_tuple=False).flatten().to(torch.int32)
    if starts.numel() <= 1:
        return None
    cu = torch.cat([starts, torch.tensor([total], dtype=torch.int32, device=starts.device)])
    return cu, int(cu.diff().max())


def afnext_varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention function with transformers' ``AttentionInterface`` signature.

    Args:
        module: The attention module (its ``is_causal`` is the default for ``is_causal``).
        query: ``(B, heads, Lq, dim)``.
        key: ``(B, kv_heads, Lk, dim)``.
        value: ``(B, kv_heads, Lk, dim)``.
        attention_mask: None or ``(B, Lk)`` bool key-padding mask (from ``flash_attention_mask``).
        dropout: Must be 0 (attention dropout is not implemented).
        scaling: Softmax scale (the AF-Whisper encoder passes 1.0 with pre-scaled queries).
        sliding_window: Window in tokens as transformers counts it (flash-attn ``window=(w - 1, w - 1)``).
        softcap: Not supported (must be None).
        is_causal: Overrides ``module.is_causal``.
        **kwargs: ``position_ids``, ``cu_seq_lens_q/k``, ``max_length_q/k`` and other model kwargs.

    Returns:
        ``(B, Lq, heads, dim)`` attention output and None (no attention weights).
    """
    if dropout:
        raise KernelInputError(
            f"attn_implementation='{DEFAULT_NAME}' does not implement attention dropout (got {dropout}); set the "
            "model's attention_dropout to 0 or use 'sdpa'."
        )
    if softcap is not None or kwargs.get("s_aux") is not None:
        raise KernelInputError(
            f"attn_implementation='{DEFAULT_NAME}' supports neither softcap nor attention sinks."
        )
    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    causal = bool(is_causal if is_causal is not None else getattr(module, "is_causal", True))
    window = (-1, -1)
    if sliding_window is not None and kv_len > sliding_window:
        window = (sliding_window - 1, sliding_window - 1)
    q = query.transpose(1, 2)  # (B, Lq, H, D)
    k = key.transpose(1, 2)  # (B, Lk, Hkv, D)
    v = value.transpose(1, 2)
    run = {"causal": causal, "window": window, "softmax_scale": scaling}

    if attention_mask is not None:
        if attention_mask.ndim != 2:
            raise KernelInputError(
                f"attn_implementation='{DEFAULT_NAME}' takes a 2-D key-padding mask (B, Lk), got a "
                f"{attention_mask.ndim}-D mask; custom 4-D masks need attn_implementation='sdpa' or 'eager'."
            )
        mask = attention_mask.to(torch.bool)
        if k.shape[1] > mask.shape[1]:  # static caches are longer than the mask: drop unused slots
            k, v = k[:, : mask.shape[1]], v[:, : mask.shape[1]]
        idx_k, cu_k, max_k = _unpad(mask)
        k_packed = k.reshape(-1, kv_heads, dim)[idx_k]  # (total_k, Hkv, D)
        v_packed = v.reshape(-1, kv_heads, dim)[idx_k]
        if q_len == mask.shape[1]:
            idx_q, cu_q, max_q = idx_k, cu_k, max_k
        elif q_len == 1:
            idx_q = torch.arange(batch, device=q.device)
            cu_q = torch.arange(batch + 1, device=q.device, dtype=torch.int32)
            max_q = 1
        else:  # several new tokens over a cache: the query rows are the mask's last q_len columns
            idx_q, cu_q, max_q = _unpad(mask[:, -q_len:])
        q_packed = q.reshape(-1, heads, dim)[idx_q]  # (total_q, H, D)
        out = flash_attn_varlen(
            q_packed, k_packed, v_packed, cu_q, max_q, cu_seqlens_k=cu_k, max_seqlen_k=max_k, **run
        )
        full = out.new_zeros(batch * q_len, heads, dim).index_copy(0, idx_q, out)
        return full.view(batch, q_len, heads, dim), None

    q_flat = q.reshape(-1, heads, dim)
    k_flat = k.reshape(-1, kv_heads, dim)
    v_flat = v.reshape(-1, kv_heads, dim)
    cu_q_kw, cu_k_kw = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    max_q_kw, max_k_kw = kwargs.get("max_length_q"), kwargs.get("max_length_k")
    if all(x is not None for x in (cu_q_kw, cu_k_kw, max_q_kw, max_k_kw)):
        out = flash_attn_varlen(
            q_flat, k_flat, v_flat, cu_q_kw.to(torch.int32), int(max_q_kw),
            cu_seqlens_k=cu_k_kw.to(torch.int32), max_seqlen_k=int(max_k_kw), **run,
        )  # fmt: skip
        return out.view(batch, q_len, heads, dim), None
    position_ids = kwargs.get("position_ids")
    packed = None
    if position_ids is not None and batch == 1 and q_len == kv_len and q_len > 1:
        packed = _packed_from_position_ids(position_ids, q_len)
    if packed is not None:
        cu, max_len = packed
        out = flash_attn_varlen(q_flat, k_flat, v_flat, cu, max_len, **run)
        return out.view(batch, q_len, heads, dim), None
    steps = torch.arange(batch + 1, device=q.device, dtype=torch.int32)
    out = flash_attn_varlen(
        q_flat,
        k_flat,
        v_flat,
        steps * q_len,
        q_len,
        cu_seqlens_k=steps * kv_len,
        max_seqlen_k=kv_len,
        **run,
    )
    return out.view(batch, q_len, heads, dim), None


def register(name: str = DEFAULT_NAME) -> str:
    """Register the attention (and its mask function) with transformers under ``name``; safe to call again.

    Returns:
        ``name``, for ``attn_implementation=register()``.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(name, afnext_varlen_attention_forward)
    AttentionMaskInterface.register(name, flash_attention_mask)
    return name
