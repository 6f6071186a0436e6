"""A single linear projection from encoder width to LLM width."""

from __future__ import annotations

import torch
from torch import nn

from afnext.specs import RecordsSpec

__all__ = ["LinearConnector"]


class LinearConnector(nn.Module, metaclass=RecordsSpec):
    """``Linear(in_dim -> out_dim)`` per frame; one token per encoder frame.

    Args:
        in_dim: Encoder width (from the encoder's ``out_dim``).
        out_dim: LLM hidden size.
        bias: Whether the projection has a bias.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.proj = nn.Linear(in_dim, out_dim, bias=bias)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """One token per frame."""
        return lengths

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project ``(W, T, in_dim)`` to ``(W, T, out_dim)``; the mask is unchanged."""
        return self.proj(hidden), mask
