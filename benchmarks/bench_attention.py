"""Variable-length attention on GPU: afnext's Triton kernel against torch SDPA, FlexAttention, xformers, flash-attn.

Shapes (bfloat16):
* encoder: 60 AF-Whisper windows x 1,500 frames, 20 heads, head dim 64, bidirectional, the last window partial
  (700 frames). Ours runs the 59 x 1,500 + 700 valid frames as one packed call; SDPA runs the padded batch with a
  key-padding mask (``padded SDPA``, what transformers' ``sdpa`` does) and, as a bound, without the mask.
* LLM: causal 8K / 16K / 32K / 64K tokens, 28 heads, 4 KV heads, head dim 128; 16K is one document (the
  target shape), the others pack documents of 1/2, 1/4, 1/8, 1/8 of the tokens. SDPA (flash, memory-efficient)
  runs one call per document, FlexAttention one call with a document-causal block mask.

Forward and forward + backward, TFLOP/s (``4 * pairs * dim * heads`` per forward with ``pairs`` the attended
query-key pairs, backward 2.5x the forward, the convention of Triton's fused-attention tutorial), ratio to ours,
and peak memory above the inputs. Each backend runs in a ``try``: one that fails prints its error and the others
go on. ``BENCH_SMOKE=1`` shrinks every shape (and runs on CPU through ``TRITON_INTERPRET=1`` where there is no GPU).
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

SMOKE = os.environ.get("BENCH_SMOKE") == "1" or "--smoke" in sys.argv
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and SMOKE:
    os.environ.setdefault(
        "TRITON_INTERPRET", "1"
    )  # before triton is first imported (kernels load lazily)
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
REP_MS = 100  # per timed variant; do_bench repeats the call for about this long


def bench_ms(fn: Callable[[], object], grads: list[torch.Tensor] | None = None) -> float:
    """Milliseconds per call (triton.testing.do_bench on GPU, a short wall-clock loop on CPU)."""
    if DEVICE == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=REP_MS, grad_to_none=grads)
    fn()
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def peak_gib(fn: Callable[[], object]) -> float:
    """Peak CUDA memory (GiB) one call allocates above what was allocated before it (NaN on CPU)."""
    if DEVICE != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**30


class Case:
    """One shape: packed q/k/v plus the per-document lengths."""

    def __init__(
        self, name: str, lengths: list[int], heads: int, kv_heads: int, dim: int, causal: bool
    ):
        self.name, self.lengths, self.heads, self.kv_heads, self.dim, self.causal = (
            name,
            lengths,
            heads,
            kv_heads,
            dim,
            causal,
        )
        total = sum(lengths)
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        self.q = torch.randn(
            total, heads, dim, device=DEVICE, dtype=DTYPE, generator=gen
        ).requires_grad_()
        self.k = torch.randn(
            total, kv_heads, dim, device=DEVICE, dtype=DTYPE, generator=gen
        ).requires_grad_()
        self.v = torch.randn(
            total, kv_heads, dim, device=DEVICE, dtype=DTYPE, generator=gen
        ).requires_grad_()
        self.dout = torch.randn_like(self.q)
        self.cu = torch.tensor(
            [0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE
        )
        pairs = sum(n * (n + 1) // 2 if causal else n * n for n in lengths)
        self.fwd_flops = 4.0 * pairs * dim * heads

    @property
    def leaves(self) -> list[torch.Tensor]:
        return [self.q, self.k, self.v]


def _ours(case: Case, impl: str = "triton") -> Callable[[], torch.Tensor]:
    from afnext_kernels import flash_attn_varlen

    return lambda: flash_attn_varlen(
        case.q, case.k, case.v, case.cu, max(case.lengths), causal=case.causal, impl=impl
    )


def _sdpa_per_document(case: Case, backend: str) -> Callable[[], torch.Tensor]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}[
        backend
    ]
    group = case.heads // case.kv_heads
    bounds = case.cu.tolist()

    def run() -> torch.Tensor:
        outs = []
        with sdpa_kernel(chosen):
            for a, b in itertools.pairwise(bounds):
                q = case.q[a:b].transpose(0, 1)[None]  # (1, H, L, D)
                k = case.k[a:b].transpose(0, 1)[None].repeat_interleave(group, dim=1)
                v = case.v[a:b].transpose(0, 1)[None].repeat_interleave(group, dim=1)
                outs.append(
                    F.scaled_dot_product_attention(q, k, v, is_causal=case.causal)[0].transpose(
                        0, 1
                    )
                )
        return torch.cat(outs)

    return run


def _sdpa_padded(case: Case, backend: str, masked: bool) -> Callable[[], torch.Tensor]:
    """The encoder as transformers' ``sdpa`` runs it: windows padded to the longest, key-padding mask."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}[
        backend
    ]
    width = max(case.lengths)
    batch = len(case.lengths)
    keep = (
        torch.arange(width, device=DEVICE)[None, :]
        < torch.tensor(case.lengths, device=DEVICE)[:, None]
    )
    index = keep.flatten().nonzero().flatten()
    mask = keep[:, None, None, :] if masked else None  # (B, 1, 1, L)

    def pad(x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(batch * width, *x.shape[1:]).index_copy(0, index, x)
        return out.view(batch, width, *x.shape[1:]).transpose(1, 2)  # (B, H, L, D)

    def run() -> torch.Tensor:
        with sdpa_kernel(chosen):
            out = F.scaled_dot_product_attention(
                pad(case.q), pad(case.k), pad(case.v), attn_mask=mask
            )
        return out.transpose(1, 2).reshape(batch * width, case.heads, case.dim)[index]

    return run


def _flex(case: Case) -> Callable[[], torch.Tensor]:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    doc = torch.repeat_interleave(
        torch.arange(len(case.lengths), device=DEVICE), torch.tensor(case.lengths, device=DEVICE)
    )
    causal = case.causal

    def mask_mod(b, h, q_idx, kv_idx):
        same = doc[q_idx] == doc[kv_idx]
        return same & (q_idx >= kv_idx) if causal else same

    total = doc.numel()
    # _compile: build the block mask without evaluating the (total x total) dense mask first.
    block_mask = create_block_mask(mask_mod, None, None, total, total, device=DEVICE, _compile=True)
    compiled = torch.compile(flex_attention, dynamic=False)
    gqa = case.heads != case.kv_heads

    def run() -> torch.Tensor:
        q, k, v = (x.transpose(0, 1)[None] for x in case.leaves)
        return compiled(q, k, v, block_mask=block_mask, enable_gqa=gqa)[0].transpose(0, 1)

    return run


def _optional(case: Case, impl: str) -> Callable[[], torch.Tensor]:
    from afnext_kernels import flash_attn_varlen
    from afnext_kernels.backends import load_flash_attn, load_xformers

    (load_xformers if impl == "xformers" else load_flash_attn)()
    return lambda: flash_attn_varlen(
        case.q, case.k, case.v, case.cu, max(case.lengths), causal=case.causal, impl=impl
    )


def _cases() -> list[Case]:
    if SMOKE:
        return [
            Case("encoder-smoke", [64, 64, 24], 2, 2, 16, False),
            Case("llm-smoke", [64, 32, 16, 16], 4, 2, 32, True),
        ]
    cases = [Case("encoder 60x1500 (last 700)", [1500] * 59 + [700], 20, 20, 64, False)]
    for tokens in (
        16384,
        8192,
        32768,
        65536,
    ):  # the target shape first, in case the time limit cuts the run
        lengths = (
            [tokens] if tokens == 16384 else [tokens // 2, tokens // 4, tokens // 8, tokens // 8]
        )
        cases.append(
            Case(f"llm causal {tokens // 1024}K ({len(lengths)} doc)", lengths, 28, 4, 128, True)
        )
    return cases


def _backends(case: Case) -> list[tuple[str, Callable[[], Callable[[], torch.Tensor]]]]:
    rows: list[tuple[str, Callable[[], Callable[[], torch.Tensor]]]] = [
        ("afnext-triton", lambda: _ours(case))
    ]
    if DEVICE != "cuda":
        return [*rows, ("afnext-reference", lambda: _ours(case, "reference"))]
    if case.name.startswith("encoder"):
        rows += [
            ("sdpa-efficient padded+mask", lambda: _sdpa_padded(case, "efficient", True)),
            ("sdpa-flash padded, no mask", lambda: _sdpa_padded(case, "flash", False)),
        ]
    else:
        rows += [
            ("sdpa-flash per doc", lambda: _sdpa_per_document(case, "flash")),
            ("sdpa-efficient per doc", lambda: _sdpa_per_document(case, "efficient")),
        ]
    if (
        case.name.startswith("encoder") or "16K" in case.name
    ):  # compile time: only the target shapes
        rows.append(("flex block-mask", lambda: _flex(case)))
    rows += [
        ("xformers", lambda: _optional(case, "xformers")),
        ("flash-attn", lambda: _optional(case, "flash_attn")),
    ]
    return rows


def main() -> None:
    if DEVICE == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, dtype {DTYPE}")
    else:
        print("CPU smoke run (TRITON_INTERPRET=1 for the Triton rows)")
    for case in _cases():
        print(
            f"\n== {case.name}: heads {case.heads}/{case.kv_heads}, dim {case.dim}, tokens {sum(case.lengths)}"
        )
        print(
            f"{'backend':<30}{'fwd ms':>9}{'fwd TF/s':>10}{'f+b ms':>9}{'f+b TF/s':>10}{'fwd x':>8}{'f+b x':>8}{'peak GiB':>10}"
        )
        ours: tuple[float, float] | None = None
        for label, make in _backends(case):
            try:
                fn = make()

                def forward(fn=fn):
                    with torch.no_grad():
                        return fn()

                fwd_ms = bench_ms(forward)

                def step(fn=fn, dout=case.dout):
                    fn().backward(dout)

                fb_ms = bench_ms(step, case.leaves)
                peak = peak_gib(step)
            except (
                Exception
            ) as err:  # a failing backend (compile error, OOM, not installed) must not stop the run
                print(
                    f"{label:<30}FAILED: {type(err).__name__}: {str(err).strip().splitlines()[0][:140] if str(err).strip() else ''}"
                )
                for x in case.leaves:
                    x.grad = None
                if DEVICE == "cuda":
                    torch.cuda.empty_cache()
                continue
            for x in case.leaves:
                x.grad = None
            if label == "afnext-triton":
                ours = (fwd_ms, fb_ms)
            fwd_tf = case.fwd_flops / fwd_ms / 1e9
            fb_tf = 3.5 * case.fwd_flops / fb_ms / 1e9
            ratios = (
                f"{fwd_ms / ours[0]:>8.2f}{fb_ms / ours[1]:>8.2f}" if ours else f"{'-':>8}{'-':>8}"
            )
            print(
                f"{label:<30}{fwd_ms:>9.2f}{fwd_tf:>10.1f}{fb_ms:>9.2f}{fb_tf:>10.1f}{ratios}{peak:>10.2f}"
            )
        print("(x columns: time / ours; above 1 means ours is faster)")
    if DEVICE == "cuda":
        print(
            "\ntargets: 16K causal fwd >= 450 TF/s; f+b time <= sdpa-flash; encoder >= 1.3x padded SDPA"
        )


if __name__ == "__main__":
    main()
