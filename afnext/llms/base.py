"""The LLM interface: what the model needs of a language model (``HFCausalLM`` implements it for any
transformers ``AutoModelForCausalLM``; a plugin LLM implements the same members).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["CausalLM"]


@runtime_checkable
class CausalLM(Protocol):
    """What afnext needs of an LLM.

    Attributes:
        hidden_size: Width of the token embeddings (the connector's ``out_dim``).
        tokenizer: A transformers tokenizer with afnext's audio tokens and a chat template.
        special_ids: ``{"audio", "audio_bos", "audio_eos"}`` token ids.
        active_attn_implementation: The attention back end it runs with (``sdpa``, ``afnext_varlen``, ...).
    """

    hidden_size: int
    tokenizer: Any
    special_ids: dict[str, int]
    active_attn_implementation: str | None

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` ids -> ``(B, L, hidden_size)`` embeddings."""
        ...

    def hidden_states(self, **kwargs: Any) -> torch.Tensor:
        """Final hidden states ``(B, L, hidden_size)`` (``inputs_embeds``, ``attention_mask``, ...)."""
        ...

    def output_weight(self) -> torch.Tensor:
        """The LM head's ``(vocab, hidden_size)`` weight (logits = hidden @ weight.T)."""
        ...

    def stop_token_ids(self) -> list[int]:
        """Token ids that end generation."""
        ...

    def generate(self, **kwargs: Any) -> torch.Tensor:
        """transformers-style ``generate`` from ``inputs_embeds`` (KV-cached)."""
        ...

    def forward(self, **kwargs: Any) -> Any:
        """transformers-style forward returning logits (and the loss with ``labels``)."""
        ...
