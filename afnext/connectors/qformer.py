"""A windowed Q-Former: a fixed set of learned queries reads each window (BLIP-2 / SALMONN style).

Every window, whatever its length, yields ``num_queries`` tokens: long audio costs
``num_queries * windows`` LLM tokens instead of 750 per window. Each layer is pre-norm self-attention over
the queries, cross-attention from the queries to the window's valid frames, and a feed-forward block
(Li et al., 2023, BLIP-2; Tang et al., 2024, SALMONN's window-level Q-Former).
"""

from __future__ import annotations

import torch
from torch import nn

from afnext.errors import ConfigError
from afnext.specs import RecordsSpec

__all__ = ["WindowQFormer"]


class _QFormerLayer(nn.Module):
    def __init__(self, dim: int, kv_dim: int, num_heads: int, ffn_mult: int) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(kv_dim)
        self.cross_attn = nn.MultiheadAttention(
            dim, num_heads, kdim=kv_dim, vdim=kv_dim, batch_first=True
        )
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, dim * ffn_mult), nn.GELU(), nn.Linear(dim * ffn_mult, dim)
        )

    def forward(self, q: torch.Tensor, kv: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.norm_self(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        kv = self.norm_kv(kv)
        q = (
            q
            + self.cross_attn(self.norm_cross(q), kv, kv, key_padding_mask=pad, need_weights=False)[
                0
            ]
        )
        return q + self.ffn(self.norm_ffn(q))


class WindowQFormer(nn.Module, metaclass=RecordsSpec):
    """Learned queries cross-attend to each window's frames; ``num_queries`` tokens per window.

    Args:
        in_dim: Encoder width.
        out_dim: LLM hidden size.
        num_queries: Tokens per window.
        num_layers: Q-Former layers.
        num_heads: Attention heads (must divide ``hidden_dim``).
        hidden_dim: Width of the queries (default: ``in_dim``).
        ffn_mult: Feed-forward expansion.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_queries: int = 32,
        num_layers: int = 2,
        num_heads: int = 8,
        hidden_dim: int | None = None,
        ffn_mult: int = 4,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.num_queries, self.num_layers, self.num_heads = num_queries, num_layers, num_heads
        self.hidden_dim, self.ffn_mult = hidden_dim or in_dim, ffn_mult
        if self.hidden_dim % num_heads:
            raise ConfigError(
                f"connector.hidden_dim ({self.hidden_dim}) must be divisible by connector.num_heads ({num_heads})"
            )
        self.queries = nn.Parameter(torch.randn(num_queries, self.hidden_dim) * 0.02)
        self.layers = nn.ModuleList(
            _QFormerLayer(self.hidden_dim, in_dim, num_heads, ffn_mult) for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(self.hidden_dim)
        self.proj = nn.Linear(self.hidden_dim, out_dim)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """``num_queries`` tokens for every window holding at least one frame."""
        return torch.where(lengths > 0, self.num_queries, 0).to(torch.long)

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Read each window with the queries.

        Args:
            hidden: ``(W, T, in_dim)``.
            mask: ``(W, T)`` True for real frames.

        Returns:
            ``(tokens (W, num_queries, out_dim), mask (W, num_queries))``.
        """
        mask = mask.to(torch.bool)
        empty = ~mask.any(-1)
        # An all-padding window would give NaN softmax rows; let it see frame 0, then drop its tokens.
        pad = ~(mask | (empty[:, None] & (torch.arange(mask.shape[1], device=mask.device) == 0)))
        q = self.queries.unsqueeze(0).expand(hidden.shape[0], -1, -1)  # (W, Q, H)
        for layer in self.layers:
            q = layer(q, hidden, pad)
        tokens = self.proj(self.norm_out(q))  # (W, Q, out_dim)
        out_mask = (~empty)[:, None].expand(-1, self.num_queries)
        return tokens, out_mask
