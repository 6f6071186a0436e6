"""transformers details every component shares: attention back ends by name, activation checkpointing.

Encoders and LLMs both wrap transformers models; what they need of transformers beyond their own model lives
here, below them, so neither imports the other.

Attention back ends by name, for every transformers model afnext builds (encoders and LLMs).

transformers resolves ``attn_implementation`` through its ``AttentionInterface`` registry. afnext's Triton
kernels join it under ``afnext_varlen`` (:func:`afnext_kernels.register`: one packed variable-length call per
attention, Triton on CUDA, the reference elsewhere, ``AFNEXT_KERNELS_IMPL`` to override), so naming it in a
config is enough: this module registers it before the model is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AFNEXT_VARLEN", "enable_checkpointing", "prepare_attn_implementation"]

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


def enable_checkpointing(model: Any) -> None:
    """Turn on a transformers model's activation checkpointing (non-reentrant, per layer), with the newer API
    where the installed transformers has it."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # pragma: no cover - transformers < 5.25
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
