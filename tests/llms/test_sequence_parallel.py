"""Sequence parallelism's pieces in one process: the degrees that work, a batch as one padded row, and the
ring's block merge against an unsplit computation (the 2- and 4-process runs are in tests/training)."""

from __future__ import annotations

import pytest
import torch

from afnext.errors import ConfigError
from afnext.llms.ring_attention import _block_forward, _mask, merge_blocks
from afnext.llms.sequence_parallel import check_heads, pack_row


def test_a_degree_that_does_not_divide_the_heads_names_the_ones_that_work():
    check_heads(28, 4)
    with pytest.raises(ConfigError, match=r"Ulysses degrees that work: \[1, 2, 4, 7, 14, 28\]"):
        check_heads(28, 8)


def test_a_batch_becomes_one_row_of_its_documents_padded_to_the_split():
    embeds = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    targets = torch.tensor([[5, 6, -100, -100], [7, -100, -100, -100]])
    row = pack_row(embeds, mask, None, targets, multiple=4)
    assert row.cu_seqlens.tolist() == [0, 3, 5, 8]  # two samples, then a padding document of 3
    assert row.positions.tolist() == [0, 1, 2, 0, 1, 0, 1, 2]
    assert row.targets.tolist() == [5, 6, -100, 7, -100, -100, -100, -100]
    assert row.samples.tolist() == [0, 0, 0, 1, 1, -1, -1, -1]
    torch.testing.assert_close(row.embeds[3], embeds[1, 0])


def test_packed_rows_keep_their_documents():
    """Rows already packed (positions restart): each sample is a document of its own."""
    embeds = torch.zeros(1, 5, 2)
    positions = torch.tensor([[0, 1, 0, 1, 2]])
    row = pack_row(embeds, None, positions, torch.zeros(1, 5, dtype=torch.long), multiple=1)
    assert row.cu_seqlens.tolist() == [0, 2, 5]


def test_the_ring_merge_of_blocks_equals_attention_over_the_whole_row():
    """Keys split in blocks, each block's partial output and log-sum-exp merged as the ring does: the output
    and the log-sum-exp of the unsplit computation (causal within documents of a packed row)."""
    torch.manual_seed(0)
    heads, length, dim = 3, 12, 8
    q, k, v = (torch.randn(heads, length, dim) for _ in range(3))
    documents = torch.tensor([0] * 5 + [1] * 4 + [2] * 3)
    positions = torch.arange(length)
    scale = dim**-0.5
    full_out, full_lse = _block_forward(q, k, v, _mask(positions, positions, documents), scale)
    out = torch.zeros(heads, length, dim)
    lse = torch.full((heads, length), float("-inf"))
    for block in (positions[8:], positions[:3], positions[3:8]):  # any order
        o_b, lse_b = _block_forward(
            q, k[:, block], v[:, block], _mask(positions, block, documents), scale
        )
        out, lse = merge_blocks(out, lse, o_b, lse_b)
    torch.testing.assert_close(out, full_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse, full_lse, rtol=1e-5, atol=1e-6)
    # ... and the unsplit computation is plain softmax attention within each document.
    scores = (q @ k.transpose(1, 2)) * scale
    causal = _mask(positions, positions, documents)
    expected = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1) @ v
    torch.testing.assert_close(full_out, expected, rtol=1e-5, atol=1e-6)


def test_the_varlen_reference_returns_the_log_sum_exp_of_an_unsplit_computation():
    from afnext_kernels import flash_attn_varlen

    torch.manual_seed(0)
    q, k, v = (torch.randn(9, 2, 8) for _ in range(3))
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)
    out, lse = flash_attn_varlen(q, k, v, cu, 5, causal=True, return_lse=True, impl="reference")
    documents = torch.tensor([0] * 4 + [1] * 5)
    ref_out, ref_lse = _block_forward(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
        _mask(torch.arange(9), torch.arange(9), documents), 8**-0.5,
    )  # fmt: skip
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, ref_out.transpose(0, 1), rtol=1e-5, atol=1e-6)
