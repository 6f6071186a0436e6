"""Frame-stacking downsampler + MLP: k consecutive frames become one token (k-fold fewer LLM tokens).

The concatenate-then-project downsampler of SLAM-LLM / Qwen-Audio style projectors: frames
``[n k, (n+1) k)`` are concatenated channel-wise (``k * in_dim``) and projected by a 2-layer MLP. A group
is a real token when its first frame is real, so a window of ``L`` valid frames yields ``ceil(L / k)``.
"""

from __future__ import annotations

import torch
from torch import nn

from afnext.errors import ConfigError
from afnext.specs import RecordsSpec

__all__ = ["FrameStackConnector"]


class FrameStackConnector(nn.Module, metaclass=RecordsSpec):
    """Stack ``stack`` frames, then ``Linear + act + Linear``.

    Args:
        in_dim: Encoder width.
        out_dim: LLM hidden size.
        stack: Frames per output token (k).
        hidden_dim: Inner width of the MLP (default: ``out_dim``).
        act: Activation name from transformers' ``ACT2FN``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        stack: int = 4,
        hidden_dim: int | None = None,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        if stack < 1:
            raise ConfigError(f"connector.stack must be >= 1, got {stack}")
        self.in_dim, self.out_dim, self.stack = in_dim, out_dim, stack
        self.hidden_dim = hidden_dim or out_dim
        self.act_name = act
        self.linear_1 = nn.Linear(in_dim * stack, self.hidden_dim)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(self.hidden_dim, out_dim)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """``ceil(lengths / stack)``."""
        return (lengths + self.stack - 1) // self.stack

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack and project.

        Args:
            hidden: ``(W, T, in_dim)``.
            mask: ``(W, T)`` True for real frames.

        Returns:
            ``(tokens (W, ceil(T / k), out_dim), mask (W, ceil(T / k)))``.
        """
        n_windows, n_frames, dim = hidden.shape
        pad = (-n_frames) % self.stack
        # Zero the padded frames so a partial group does not see stale activations.
        hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        if pad:
            hidden = nn.functional.pad(hidden, (0, 0, 0, pad))
        groups = (n_frames + pad) // self.stack
        stacked = hidden.reshape(n_windows, groups, self.stack * dim)  # (W, T/k, k*D)
        lengths = self.output_lengths(mask.to(torch.long).sum(-1))
        out_mask = torch.arange(groups, device=hidden.device)[None, :] < lengths[:, None]
        return self.linear_2(self.act(self.linear_1(stacked))), out_mask
