"""``nn.Module`` wrappers of the ops that hold settings (as Liger-Kernel's ``LigerFusedLinearCrossEntropyLoss``).

Only the loss has settings worth holding in a module; attention and RoTE are called as functions by the modules
that own their weights (transformers' attention layers, ``afnext.connectors``).
"""

from __future__ import annotations

import torch
from torch import nn

from afnext_kernels.functional import linear_cross_entropy

__all__ = ["LinearCrossEntropyLoss"]


class LinearCrossEntropyLoss(nn.Module):
    """Cross-entropy of ``hidden @ weight.T`` against ``labels`` without building the logits.

    A module with no parameters of its own: the LM head's weight is passed to :meth:`forward`, so the loss can sit
    beside a model whose head it does not own. See :func:`afnext_kernels.linear_cross_entropy` for the formula.

    Args:
        ignore_index: Label that contributes neither loss nor gradient.
        reduction: ``"mean"`` over tokens that are not ignored, or ``"sum"``.
        label_smoothing: ``eps`` in ``[0, 1]``, as ``F.cross_entropy``.
        z_loss: Coefficient of the z-loss ``z_loss * logsumexp(logits)^2`` (0 disables it).
        impl: ``"auto"`` (Triton on CUDA, reference elsewhere), ``"triton"`` or ``"reference"``.
        chunk_size: Tokens per chunk (default: Liger-Kernel's rule, at least 256).
    """

    def __init__(
        self,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        z_loss: float = 0.0,
        impl: str = "auto",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.impl = impl
        self.chunk_size = chunk_size

    def forward(
        self, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Loss of one batch.

        Args:
            hidden: ``(N, H)`` (or ``(..., H)``) final hidden states.
            weight: ``(V, H)`` LM-head weight, same dtype and device as ``hidden``.
            labels: ``(N,)`` (or ``(...)``) int targets in ``[0, V)`` or ``ignore_index``.

        Returns:
            Scalar float32 loss.
        """
        return linear_cross_entropy(
            hidden, weight, labels, ignore_index=self.ignore_index, reduction=self.reduction,
            impl=self.impl, label_smoothing=self.label_smoothing, z_loss=self.z_loss,
            chunk_size=self.chunk_size,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing}, z_loss={self.z_loss}, impl={self.impl!r}"
        )
