"""flash_attn_varlen (``ops/flash_attn_varlen*.py``, reference and Triton) against dense attention with an explicit mask.

Tolerances (max abs error; inputs ~N(0, 1)): float32 1e-4 for outputs, log-sum-exp and gradients (the
interpreter and the reference both accumulate in float32, observed ~2e-6); on GPU the 16-bit runs are judged
relative to the largest reference value: 1e-2 (float16) and 3e-2 (bfloat16) for outputs and gradients.
"""

from __future__ import annotations

import pytest
import torch

from afnext_kernels import flash_attn_varlen
from afnext_kernels.errors import KernelInputError

# (lens_q, lens_k or None, heads, kv_heads, dim, causal, window)
FAST_CASES = [
    pytest.param([1, 17, 40], None, 2, 1, 16, True, (-1, -1), id="pack-causal-gqa2"),
    pytest.param([17, 5], None, 3, 1, 24, False, (-1, -1), id="bidir-gqa3-dim24"),
    pytest.param([129], None, 1, 1, 16, True, (20, -1), id="len129-causal-window20"),
    pytest.param([40, 33], None, 2, 2, 16, False, (5, 3), id="bidir-window5x3"),
    pytest.param([1, 3, 5], [20, 9, 3], 2, 1, 16, True, (-1, -1), id="kv-cache-bottom-right"),
]
SLOW_CASES = [
    pytest.param([129, 200, 77, 1], None, 2, 1, 64, True, (-1, -1), id="causal-dim64"),
    pytest.param([150, 31], None, 3, 1, 32, False, (17, 40), id="bidir-window-gqa3"),
    pytest.param([64, 100], [200, 100], 3, 3, 16, True, (33, -1), id="kv-cache-window"),
    pytest.param([200], None, 2, 1, 80, True, (-1, -1), id="dim80"),
]


def _run(
    naive_attention, lens_q, lens_k, heads, kv_heads, dim, causal, window, *, impl, device, dtype
):
    lens_k = lens_q if lens_k is None else lens_k
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(sum(lens_q), heads, dim, generator=gen).to(device, dtype).requires_grad_()
    k = torch.randn(sum(lens_k), kv_heads, dim, generator=gen).to(device, dtype).requires_grad_()
    v = torch.randn(sum(lens_k), kv_heads, dim, generator=gen).to(device, dtype).requires_grad_()
    dout = torch.randn(sum(lens_q), heads, dim, generator=gen).to(device, dtype)
    cu_q = torch.tensor(
        [0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32, device=device
    )
    cu_k = torch.tensor(
        [0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32, device=device
    )
    out, lse = flash_attn_varlen(
        q, k, v, cu_q, max(lens_q), causal=causal, window=window, impl=impl,
        cu_seqlens_k=cu_k, max_seqlen_k=max(lens_k), return_lse=True,
    )  # fmt: skip
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref_in = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref_out, ref_lse = naive_attention(*ref_in, lens_q, lens_k, causal=causal, window=window)
    ref_grads = torch.autograd.grad(ref_out, ref_in, dout.float())
    return (out, lse, *grads), (ref_out, ref_lse, *ref_grads)


def _compare(got, want, dtype):
    names = ["out", "lse", "dq", "dk", "dv"]
    for name, a, b in zip(names, got, want):
        a = a.float().cpu()
        b = b.float().cpu()
        assert torch.equal(torch.isinf(a), torch.isinf(b)), f"{name}: -inf pattern differs"
        finite = torch.isfinite(b)
        err = (a[finite] - b[finite]).abs().max().item() if finite.any() else 0.0
        if dtype == torch.float32:
            assert err <= 1e-4, f"{name}: max abs error {err}"
        else:
            rel = err / max(b[finite].abs().max().item(), 1e-6)
            limit = 1e-2 if dtype == torch.float16 else 3e-2
            assert rel <= limit, f"{name}: max error {rel:.2e} of the largest value"


def _dtypes(device, slow=False):
    # Each dtype compiles its own kernels on GPU: the fast grid runs bfloat16, the slow one both 16-bit types.
    if device == "cpu":
        return [torch.float32]
    return [torch.float16, torch.bfloat16] if slow else [torch.bfloat16]


@pytest.mark.parametrize("impl", ["reference", "triton"])
@pytest.mark.parametrize(
    ("lens_q", "lens_k", "heads", "kv_heads", "dim", "causal", "window"), FAST_CASES
)
def test_flash_attn_varlen_matches_dense(
    require_impl,
    naive_attention,
    device,
    impl,
    lens_q,
    lens_k,
    heads,
    kv_heads,
    dim,
    causal,
    window,
):
    require_impl(impl, device)
    for dtype in _dtypes(device):
        got, want = _run(
            naive_attention,
            lens_q,
            lens_k,
            heads,
            kv_heads,
            dim,
            causal,
            window,
            impl=impl,
            device=device,
            dtype=dtype,
        )
        _compare(got, want, dtype)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("lens_q", "lens_k", "heads", "kv_heads", "dim", "causal", "window"), SLOW_CASES
)
def test_flash_attn_varlen_larger_grid(
    require_impl, naive_attention, device, lens_q, lens_k, heads, kv_heads, dim, causal, window
):
    require_impl("triton", device)
    for dtype in _dtypes(device, slow=True):
        got, want = _run(
            naive_attention,
            lens_q,
            lens_k,
            heads,
            kv_heads,
            dim,
            causal,
            window,
            impl="triton",
            device=device,
            dtype=dtype,
        )
        _compare(got, want, dtype)


def test_queries_without_keys_give_zero_and_minus_inf():
    # 5 queries over 3 keys, causal and bottom-right aligned: the first two queries see nothing.
    q, k, v = torch.randn(5, 1, 8), torch.randn(3, 1, 8), torch.randn(3, 1, 8)
    out, lse = flash_attn_varlen(
        q, k, v, torch.tensor([0, 5], dtype=torch.int32), 5, causal=True, impl="reference",
        cu_seqlens_k=torch.tensor([0, 3], dtype=torch.int32), max_seqlen_k=3, return_lse=True,
    )  # fmt: skip
    assert torch.all(out[:2] == 0) and torch.all(torch.isinf(lse[:, :2]))
    assert torch.isfinite(lse[:, 2:]).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cu": [0, 4, 9]}, "rise from 0 to the token count"),
        ({"max_seqlen": 3}, "more than max_seqlen"),
        ({"kv_heads": 3}, "multiple of key/value heads"),
        ({"window": (-2, 0)}, "window must be"),
    ],
)
def test_bad_inputs_are_named(kwargs, match):
    kv_heads = kwargs.get("kv_heads", 2)
    q, k = torch.randn(10, 4, 8), torch.randn(10, kv_heads, 8)
    cu = torch.tensor(kwargs.get("cu", [0, 4, 10]), dtype=torch.int32)
    with pytest.raises(KernelInputError, match=match):
        flash_attn_varlen(
            q,
            k,
            k,
            cu,
            kwargs.get("max_seqlen", 6),
            window=kwargs.get("window", (-1, -1)),
            impl="reference",
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_long_pack_uses_64bit_offsets(naive_attention):
    # 2 sequences whose token x head x dim offsets pass 2**31 elements in the packed tensors.
    dim, heads = 128, 32
    total = (2**31) // (heads * dim) + 4096
    lens = [total - 1024, 1024]
    cu = torch.tensor([0, lens[0], total], dtype=torch.int32, device="cuda")
    q = torch.zeros(total, heads, dim, device="cuda", dtype=torch.bfloat16)
    q[-1024:] = torch.randn(1024, heads, dim, device="cuda", dtype=torch.bfloat16)
    out = flash_attn_varlen(q, q, q, cu, lens[0], causal=True, impl="triton")
    tail = q[-1024:]
    want, _ = naive_attention(tail, tail, tail, [1024], [1024], causal=True, window=(-1, -1))
    assert (out[-1024:].float() - want).abs().max().item() < 3e-2
