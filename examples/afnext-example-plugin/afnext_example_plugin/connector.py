"""A connector that averages pairs of frames and projects them to the LLM's width."""

from __future__ import annotations

import torch
from torch import nn


class MeanPoolConnector(nn.Module):
    """Average each pair of encoder frames, then ``Linear(in_dim, out_dim)``.

    Args:
        in_dim: Encoder width (afnext fills it from the encoder's ``out_dim``).
        out_dim: LLM width (afnext fills it from the LLM's hidden size).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = nn.Linear(in_dim, out_dim)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + 1) // 2

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, T, in_dim)`` -> ``(W, ceil(T / 2), out_dim)`` and its mask."""
        if hidden.shape[1] % 2:
            hidden = nn.functional.pad(hidden, (0, 0, 0, 1))
            mask = nn.functional.pad(mask, (0, 1))
        pooled = hidden.view(hidden.shape[0], -1, 2, hidden.shape[2]).mean(dim=2)
        lengths = self.output_lengths(mask.long().sum(-1))
        out_mask = torch.arange(pooled.shape[1], device=pooled.device)[None, :] < lengths[:, None]
        return self.proj(pooled), out_mask
