"""The 2-layer MLP projector of AF3 / Music Flamingo / AF-Next.

Same parameter names as transformers' ``AudioFlamingo3MultiModalProjector`` (``linear_1``, ``linear_2``) so
checkpoints map one to one: ``Linear(1280 -> 3584) + GELU + Linear(3584 -> 3584)`` for AF-Next.
"""

from __future__ import annotations

import torch
from torch import nn

from afnext.specs import RecordsSpec

__all__ = ["MLPConnector"]


class MLPConnector(nn.Module, metaclass=RecordsSpec):
    """``Linear(in -> hidden) + act + Linear(hidden -> out)`` per frame.

    Args:
        in_dim: Encoder width.
        out_dim: LLM hidden size.
        hidden_dim: Inner width (default: ``out_dim``, as in AF3).
        act: Activation name from transformers' ``ACT2FN`` (``gelu`` in AF3).
        bias: Whether both linears have biases.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int | None = None,
        act: str = "gelu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.in_dim, self.out_dim = in_dim, out_dim
        self.hidden_dim = hidden_dim or out_dim
        self.act_name = act
        self.linear_1 = nn.Linear(in_dim, self.hidden_dim, bias=bias)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(self.hidden_dim, out_dim, bias=bias)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """One token per frame."""
        return lengths

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project ``(W, T, in_dim)`` to ``(W, T, out_dim)``; the mask is unchanged."""
        return self.linear_2(self.act(self.linear_1(hidden))), mask
