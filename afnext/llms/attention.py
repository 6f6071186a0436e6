"""Attention back ends by name, for every transformers model afnext builds (encoders and LLMs).

transformers resolves ``attn_implementation`` through its ``AttentionInterface`` registry. afnext's Triton
kernels join it under ``afnext_varlen`` (:func:`afnext_kernels.register`: one packed variable-length call per
attention, Triton on CUDA, the reference elsewhere, ``AFNEXT_KERNELS_IMPL`` to override), so naming it in a
config is enough: this module registers it before the model is built.
"""

from __future__ import annotations

__all__ = ["AFNEXT_VARLEN", "prepare_attn_implementation"]

AFNEXT_VARLEN = "afnext_varlen"


def prepare_attn_implementation(name: str | None) -> str | None:
    """Make ``name`` resolvable by transformers and return it.

    Args:
        name: ``sdpa``, ``eager``, ``flex_attention``, ``flash_attention_2``, ``afnext_varlen``, None
            (transformers picks), or any name registered with ``AttentionInterface``.

    Returns:
        ``name``, after registering afnext's kernels when it is ``afnext_varlen``.
    """
    if name == AFNEXT_VARLEN:
        import afnext_kernels

        afnext_kernels.register(AFNEXT_VARLEN)
    return name
