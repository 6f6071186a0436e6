"""The connector interface: encoder frames -> LLM-width audio tokens.

``forward(hidden (W, T, in_dim), mask (W, T)) -> (tokens (W, T', out_dim), mask (W, T'))`` and
``output_lengths(lengths) -> lengths'`` (tokens a window of ``lengths`` valid frames yields). ``in_dim``
comes from the encoder's ``out_dim`` and ``out_dim`` from the LLM's hidden size: connector configs are
Hydra partials finished by :meth:`afnext.model.AudioLanguageModel.build`, never typed twice.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Connector", "TimeEmbedding"]


@runtime_checkable
class Connector(Protocol):
    """What afnext needs of a connector."""

    in_dim: int
    out_dim: int

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor: ...

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class TimeEmbedding(Protocol):
    """What afnext needs of a time embedding: encoder frames and each window's index within its audio in,
    the same frames with time encoded out (``dim`` and ``frame_rate`` come from the encoder)."""

    def forward(self, hidden: torch.Tensor, window_index: torch.Tensor) -> torch.Tensor: ...
