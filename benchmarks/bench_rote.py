"""Fused RoTE against the PyTorch reference (float32 angles, float64 cos / sin tables) on AF-Next's shape.

60 windows x 750 tokens x 1,280 channels (30 minutes of AF-Whisper output), 256 rotated channels per axis, bf16.
Forward and forward + backward: time, effective bandwidth (bytes of hidden read and written), ratio, and peak
memory above the inputs. Variants: afnext-triton, the reference, and ``torch.compile(reference)``; each runs in
a ``try`` so a failing one prints its error and the run goes on. ``BENCH_SMOKE=1`` shrinks the shape (and runs on
CPU through ``TRITON_INTERPRET=1`` where there is no GPU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# bench_attention reads BENCH_SMOKE / --smoke and, for a CPU smoke run, sets TRITON_INTERPRET=1 before triton loads.
from bench_attention import DEVICE, SMOKE, bench_ms, peak_gib


def main() -> None:
    from afnext_kernels import rote

    windows, tokens, channels, axis_dim = (3, 40, 96, 16) if SMOKE else (60, 750, 1280, 256)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    timestamps = (
        torch.arange(windows, device=DEVICE)[:, None] * 30.0
        + torch.arange(tokens, device=DEVICE)[None, :] * 0.04
    ).float()
    hidden = torch.randn(windows, tokens, channels, device=DEVICE, dtype=dtype, requires_grad=True)
    grad = torch.randn_like(hidden)
    kwargs = {"window_duration": 30.0, "axis_dim": axis_dim}
    variants: dict[str, Callable[[], Callable[[], torch.Tensor]]] = {
        "afnext-triton": lambda: lambda: rote(hidden, timestamps, impl="triton", **kwargs),
        "reference": lambda: lambda: rote(hidden, timestamps, impl="reference", **kwargs),
    }
    if DEVICE == "cuda":
        from afnext_kernels import rote_reference

        def compiled():
            fn = torch.compile(rote_reference, dynamic=False)
            return lambda: fn(hidden, timestamps, **kwargs)

        variants["torch.compile(reference)"] = compiled
    moved = 2 * hidden.numel() * hidden.element_size()  # read hidden, write the output
    print(f"RoTE {windows}x{tokens}x{channels}, axis_dim {axis_dim}, {dtype}, device {DEVICE}")
    print(
        f"{'variant':<26}{'fwd ms':>9}{'fwd GB/s':>10}{'f+b ms':>9}{'fwd x':>8}{'f+b x':>8}{'peak GiB':>10}"
    )
    ours = None
    for name, make in variants.items():
        try:
            fn = make()

            def forward(fn=fn):
                with torch.no_grad():
                    return fn()

            fwd = bench_ms(forward)

            def step(fn=fn):
                fn().backward(grad)

            fb = bench_ms(step, [hidden])
            peak = peak_gib(step)
        except Exception as err:  # keep going when one variant fails
            print(
                f"{name:<26}FAILED: {type(err).__name__}: {str(err).strip().splitlines()[0][:140] if str(err).strip() else ''}"
            )
            continue
        hidden.grad = None
        if name == "afnext-triton":
            ours = (fwd, fb)
        ratios = f"{fwd / ours[0]:>8.2f}{fb / ours[1]:>8.2f}" if ours else f"{'-':>8}{'-':>8}"
        print(f"{name:<26}{fwd:>9.3f}{moved / fwd / 1e6:>10.1f}{fb:>9.3f}{ratios}{peak:>10.3f}")
    print("(x columns: time / ours; above 1 means ours is faster)")


if __name__ == "__main__":
    main()
