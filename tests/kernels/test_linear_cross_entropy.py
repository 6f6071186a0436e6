"""linear_cross_entropy (``ops/linear_cross_entropy*.py``, reference and Triton) against F.cross_entropy on fully
materialised logits; the LinearCrossEntropyLoss module.

Tolerances: float32 loss and gradients within 1e-5 absolute (observed ~1e-7; both sides accumulate in
float32); on GPU with 16-bit inputs the logits chunk is rounded to the input dtype as the naive path's
logits are, judged at 2e-2 relative to the largest reference value.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from afnext_kernels import (
    LinearCrossEntropyLoss,
    linear_cross_entropy,
    linear_cross_entropy_reference,
)
from afnext_kernels.errors import KernelInputError

CASES = [
    pytest.param(37, 16, 1000, {}, id="mean"),
    pytest.param(37, 16, 1000, {"reduction": "sum", "chunk_size": 16}, id="sum-chunks"),
    pytest.param(
        23, 8, 1500, {"label_smoothing": 0.1, "chunk_size": 7}, id="smoothing-two-vocab-blocks"
    ),
    pytest.param(17, 8, 257, {"z_loss": 1e-3, "label_smoothing": 0.2}, id="zloss-smoothing"),
    pytest.param(1, 8, 33, {}, id="one-token"),
]


def _naive(hidden, weight, labels, *, reduction="mean", label_smoothing=0.0, z_loss=0.0, **_):
    logits = hidden.float() @ weight.float().T  # (N, V)
    loss = F.cross_entropy(logits, labels, reduction=reduction, label_smoothing=label_smoothing)
    if z_loss:
        keep = labels != -100
        z = z_loss * torch.logsumexp(logits[keep], dim=-1).square().sum()
        loss = loss + (z / keep.sum() if reduction == "mean" else z)
    return loss


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize(("tokens", "hidden_size", "vocab", "kwargs"), CASES)
def test_matches_cross_entropy_on_full_logits(
    require_impl, device, impl, tokens, hidden_size, vocab, kwargs
):
    require_impl(impl, device)
    dtypes = [torch.float32] if device == "cpu" else [torch.float32, torch.bfloat16]
    for dtype in dtypes:
        gen = torch.Generator().manual_seed(0)
        hidden = torch.randn(tokens, hidden_size, generator=gen).to(device, dtype).requires_grad_()
        weight = torch.randn(vocab, hidden_size, generator=gen).to(device, dtype).requires_grad_()
        labels = torch.randint(0, vocab, (tokens,), generator=gen).to(device)
        labels[:: max(tokens // 4, 2)] = -100 if tokens > 1 else int(labels[0])
        loss = linear_cross_entropy(hidden, weight, labels, impl=impl, **kwargs)
        grads = torch.autograd.grad(loss * 1.5, (hidden, weight))
        ref_in = [t.detach().float().requires_grad_() for t in (hidden, weight)]
        ref = _naive(*ref_in, labels, **kwargs)
        ref_grads = torch.autograd.grad(ref * 1.5, ref_in)
        for got, want in [(loss, ref), *zip(grads, ref_grads)]:
            err = (got.float() - want).abs().max().item()
            if dtype == torch.float32:
                assert err <= 1e-5 * max(1.0, want.abs().max().item()), err
            else:
                assert err <= 2e-2 * want.abs().max().item(), err


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_ignored_matches_torch(reduction):
    hidden = torch.randn(5, 4, requires_grad=True)
    weight = torch.randn(11, 4, requires_grad=True)
    labels = torch.full((5,), -100)
    loss = linear_cross_entropy(hidden, weight, labels, reduction=reduction, impl="reference")
    want = F.cross_entropy(hidden @ weight.T, labels, reduction=reduction)
    assert torch.equal(loss.isnan(), want.isnan()) and (reduction == "mean" or loss.item() == 0.0)
    loss.backward()
    assert torch.all(hidden.grad == 0) and torch.all(weight.grad == 0)


def test_reference_keeps_no_logits_for_backward():
    # The autograd graph holds only the gradients (N x H and V x H), never an N x V tensor.
    hidden = torch.randn(64, 8, requires_grad=True)
    weight = torch.randn(500, 8, requires_grad=True)
    labels = torch.randint(0, 500, (64,))
    saved: list[torch.Size] = []
    with torch.autograd.graph.saved_tensors_hooks(
        lambda t: saved.append(t.shape) or t, lambda t: t
    ):
        linear_cross_entropy(hidden, weight, labels, impl="reference", chunk_size=16)
    assert saved and all(s.numel() <= 500 * 8 for s in saved), saved


def test_out_of_range_label_is_refused():
    with pytest.raises(KernelInputError, match="outside"):
        linear_cross_entropy(
            torch.randn(3, 4), torch.randn(7, 4), torch.tensor([0, 7, -100]), impl="reference"
        )


def test_loss_module_and_reference_match_the_function_bit_for_bit():
    # LinearCrossEntropyLoss holds the settings and owns no parameters; the public reference is the same path.
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 9, 8, generator=gen)
    weight = torch.randn(50, 8, generator=gen)
    labels = torch.randint(0, 50, (2, 9), generator=gen)
    labels[0, :3] = -1
    settings = {"ignore_index": -1, "reduction": "sum", "label_smoothing": 0.1, "chunk_size": 5}
    module = LinearCrossEntropyLoss(impl="reference", **settings)
    want = linear_cross_entropy(hidden, weight, labels, impl="reference", **settings)
    assert torch.equal(module(hidden, weight, labels), want)
    assert torch.equal(
        linear_cross_entropy_reference(
            hidden.reshape(-1, 8), weight, labels.reshape(-1), **settings
        ),
        want,
    )
    assert list(module.parameters()) == [] and "reduction='sum'" in repr(module)
