"""The next-token loss from final hidden states, without building the ``(tokens, vocabulary)`` logits.

transformers' ``ForCausalLMLoss`` (``transformers/loss/loss_utils.py``) shifts the labels left by one (a row's
last position predicts nothing), computes the logits of every position and averages the cross-entropy over the
labels that are not ``-100`` (or divides the sum by ``num_items_in_batch`` when given: the target tokens of the
whole optimizer step under gradient accumulation). This computes the same number from the hidden states and the
LM-head weight with :func:`afnext_kernels.linear_cross_entropy` (Triton on CUDA, the chunked PyTorch reference
elsewhere), and only for the positions that have a target: in an audio-language sample most positions are audio
tokens, which have none. At 45,000 audio tokens and Qwen2.5's 151,672-row vocabulary the full logits alone are
27 GB in float32; here the peak is one chunk of them.
"""

from __future__ import annotations

import torch

__all__ = ["IGNORE_INDEX", "next_token_loss", "shift_labels", "target_loss_sums"]

IGNORE_INDEX = -100


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` targets of each position: the next position's label, ``-100`` after a row's last token."""
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def target_loss_sums(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    groups: torch.Tensor | None = None,
    num_groups: int = 1,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """Summed cross-entropy of ``hidden @ weight.T`` against already-shifted ``targets``, per group of positions.

    Args:
        hidden: ``(N, D)`` hidden states.
        weight: ``(V, D)`` LM-head weight.
        targets: ``(N,)`` targets (``-100`` where none).
        groups: ``(N,)`` group of each position (a sample), or None for one group.
        num_groups: How many groups.
        impl: Kernel implementation.

    Returns:
        ``(num_groups,)`` float32 sums (0 for a group without targets, with gradients that still reach ``hidden``
        and ``weight``).
    """
    from afnext_kernels import linear_cross_entropy

    keep = targets != IGNORE_INDEX
    rows, kept = hidden[keep], targets[keep]
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        rows, weight = rows.to(dtype), weight.to(dtype)
    elif rows.dtype != weight.dtype:
        rows = rows.to(weight.dtype)
    with torch.autocast(device_type, enabled=False):
        if groups is None:
            return linear_cross_entropy(rows, weight, kept, reduction="sum", impl=impl)[None]
        owners = groups[keep]
        return torch.stack(
            [
                linear_cross_entropy(
                    rows[owners == g], weight, kept[owners == g], reduction="sum", impl=impl
                )
                for g in range(num_groups)
            ]
        )


def next_token_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_items_in_batch: int | float | torch.Tensor | None = None,
    impl: str = "auto",
    per_row: bool = False,
) -> torch.Tensor:
    """Causal-LM cross-entropy of ``hidden @ weight.T`` against ``labels`` shifted by one.

    Under autocast the product runs in the autocast dtype, as ``nn.Linear`` (the LM head) would; the loss is
    float32.

    Args:
        hidden: ``(B, L, D)`` final hidden states (after the decoder's last norm).
        weight: ``(V, D)`` LM-head weight.
        labels: ``(B, L)`` labels as the processor makes them (``-100`` where ignored), not yet shifted.
        num_items_in_batch: Divide the summed loss by this (transformers' convention); ``None``: the mean over
            this batch's targets.
        impl: Kernel implementation (``auto``, ``triton``, ``reference``).
        per_row: Return each row's summed loss ``(B,)`` instead (one kernel call per row; for validation).

    Returns:
        Scalar float32 loss; 0 (with zero gradients that still reach ``hidden`` and ``weight``) when no position
        has a target and ``num_items_in_batch`` is given, NaN without it (as ``F.cross_entropy``).
    """
    from afnext_kernels import linear_cross_entropy

    targets = shift_labels(labels.to(hidden.device))
    keep = targets != IGNORE_INDEX  # (B, L)
    rows = hidden[keep]  # (N, D): only positions that predict something
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        rows, weight = rows.to(dtype), weight.to(dtype)
    elif rows.dtype != weight.dtype:
        rows = rows.to(weight.dtype)
    with torch.autocast(device_type, enabled=False):
        if per_row:
            counts = keep.sum(dim=1).tolist()
            parts = torch.split(rows, counts)  # rows are in row-major order
            labels_kept = torch.split(targets[keep], counts)
            return torch.stack(
                [
                    linear_cross_entropy(h, weight, y, reduction="sum", impl=impl)
                    for h, y in zip(parts, labels_kept)
                ]
            )
        total = linear_cross_entropy(rows, weight, targets[keep], reduction="sum", impl=impl)
    if num_items_in_batch is None:
        return total / keep.sum()
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
