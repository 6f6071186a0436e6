"""How much work a batch is: the one estimate the data sampler balances ranks by and the planner sizes with.

Work is counted in floating-point operations of a training step (forward and backward, about three times the
forward): the LLM's matrix products per token (``6 x parameters``, the LM head included), its attention per pair
of tokens in the same document (``6 x layers x hidden x sum(len^2)`` for causal attention: ``QK^T`` and ``PV``,
half the pairs), and the encoder per window (its matrix products and attention over the window's frames). A
30-minute sample is 60 windows and 45,000 tokens whose attention alone is about 2,000 times a 30-second one's, so
balancing by samples or seconds would leave ranks waiting on the one that holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelDims", "step_flops"]


@dataclass(frozen=True)
class ModelDims:
    """The sizes work and memory depend on, read from a built model (on ``meta`` or not).

    Attributes:
        llm_hidden / llm_layers / llm_heads / llm_kv_heads / llm_head_dim / llm_intermediate / vocab: The LLM's.
        llm_params: LLM parameters outside the embeddings (what every token goes through).
        encoder_width / encoder_layers / encoder_positions / encoder_params: The encoder's (positions: frames a
            window's layers see, 1500 for Whisper).
        tokens_per_window: LLM tokens a full window yields.
        window_seconds: Seconds of audio per window.
    """

    llm_hidden: int
    llm_layers: int
    llm_heads: int
    llm_kv_heads: int
    llm_head_dim: int
    llm_intermediate: int
    vocab: int
    llm_params: int
    encoder_width: int
    encoder_layers: int
    encoder_positions: int
    encoder_params: int
    tokens_per_window: int
    window_seconds: float

    @classmethod
    def from_model(cls, model: Any) -> ModelDims:
        """Read the sizes of an ``AudioLanguageModel`` (no forward; works on ``meta``)."""
        import torch
        from transformers.modeling_layers import GradientCheckpointingLayer

        from afnext.encoders.base import encoder_front_end

        cfg = model.llm.config
        hidden = int(cfg.hidden_size)
        heads = int(cfg.num_attention_heads)
        embed = model.llm.base.get_input_embeddings().weight.numel()
        llm_params = sum(p.numel() for p in model.llm.parameters()) - embed
        encoder = model.encoder
        layers = [m for m in encoder.modules() if isinstance(m, GradientCheckpointingLayer)]
        front = encoder_front_end(encoder)
        frames = round(front.window_seconds * front.frame_rate)
        tokens = int(model.audio_tokens_for_frames(torch.tensor([frames])).sum())
        tower_cfg = getattr(getattr(encoder, "tower", None), "config", None)
        positions = int(getattr(tower_cfg, "max_source_positions", 0) or max(tokens, 1))
        return cls(
            llm_hidden=hidden,
            llm_layers=int(cfg.num_hidden_layers),
            llm_heads=heads,
            llm_kv_heads=int(getattr(cfg, "num_key_value_heads", heads) or heads),
            llm_head_dim=int(getattr(cfg, "head_dim", None) or hidden // heads),
            llm_intermediate=int(getattr(cfg, "intermediate_size", 4 * hidden)),
            vocab=int(model.llm.base.get_input_embeddings().num_embeddings),
            llm_params=int(llm_params),
            encoder_width=int(encoder.out_dim),
            encoder_layers=len(layers),
            encoder_positions=positions,
            encoder_params=int(sum(p.numel() for p in encoder.parameters())),
            tokens_per_window=tokens,
            window_seconds=float(front.window_seconds),
        )

    def tokens_for_seconds(self, seconds: float, text_tokens: int = 64) -> int:
        """LLM tokens of a sample with ``seconds`` of audio (audio tokens, boundary tokens, a prompt's text)."""
        full, rest = divmod(seconds, self.window_seconds)
        audio = int(full) * self.tokens_per_window + round(
            rest / self.window_seconds * self.tokens_per_window
        )
        return audio + 2 + text_tokens  # + <|sound_bos|> / <|sound_eos|>

    def windows_for_seconds(self, seconds: float) -> int:
        """Encoder windows of ``seconds`` of audio."""
        return max(1, -(-round(seconds * 1000) // round(self.window_seconds * 1000)))


def step_flops(
    dims: ModelDims, documents: Sequence[int], windows: int, *, target_tokens: int | None = None
) -> float:
    """Floating-point operations of one training step (forward and backward) on some documents.

    Args:
        dims: The model's sizes.
        documents: Tokens of each document (sample) of the batch; a packed row is several.
        windows: Audio windows the encoder runs.
        target_tokens: Tokens with a target (through the LM head); default: all.

    Returns:
        The estimate (about 3 times the forward's operations).
    """
    tokens = sum(documents)
    targets = tokens if target_tokens is None else target_tokens
    llm = 6.0 * tokens * dims.llm_params + 6.0 * targets * dims.vocab * dims.llm_hidden
    attention = (
        6.0 * dims.llm_layers * dims.llm_heads * dims.llm_head_dim * sum(d * d for d in documents)
    )
    per_window = dims.encoder_params * dims.encoder_positions * 6.0 + (
        12.0 * dims.encoder_layers * dims.encoder_width * dims.encoder_positions**2
    )
    return llm + attention + windows * per_window
