"""RoTE: the reference against transformers' MusicFlamingo classes, the Triton kernels against the reference.

Tolerances: the reference equals transformers bit for bit. The Triton kernels compute the same float32 angles
but their own cos / sin (after a float64 range reduction) and a float32 rotation: 1e-5 absolute on float32
outputs and gradients of ~N(0, 1) inputs (observed ~4e-7 with angles up to ~6e3 rad), and on GPU 16-bit
outputs within 2 units in the last place (relative 1.6e-2 for bfloat16, 2e-3 for float16).
"""

from __future__ import annotations

import pytest
import torch

from afnext_kernels import rote, rote_reference
from afnext_kernels.errors import KernelInputError


def _timestamps(
    windows: list[float], tokens: int, step: float = 0.04, window: float = 30.0
) -> torch.Tensor:
    """``(W, T)`` seconds: window ``w`` starts at ``windows[w] * window`` and advances ``step`` per token."""
    starts = torch.tensor(windows, dtype=torch.float32)[:, None] * window
    return starts + torch.arange(tokens, dtype=torch.float32)[None, :] * step


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_equals_transformers_musicflamingo(dtype):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "MusicFlamingoConfig"):
        pytest.skip(f"transformers {transformers.__version__} has no MusicFlamingo")
    from transformers import MusicFlamingoConfig
    from transformers.models.musicflamingo.modeling_musicflamingo import (
        MusicFlamingoRotaryEmbedding,
        apply_rotary_time_emb,
    )

    config = (
        MusicFlamingoConfig()
    )  # AF-Next values: audio hidden 1280, rope_theta 1200, partial factor 0.2
    tokens = 25
    embedding = MusicFlamingoRotaryEmbedding(config)
    timestamps = _timestamps([0, 1, 59], tokens, window=config.audio_frame_step * 4 * tokens)
    hidden = torch.randn(3, tokens, config.audio_config.hidden_size).to(dtype)
    cos, sin = embedding(timestamps, seq_len=tokens)
    want = apply_rotary_time_emb(hidden, cos, sin)
    axis_dim = int(
        config.audio_config.hidden_size * config.rope_parameters["partial_rotary_factor"]
    )
    got = rote_reference(
        hidden, timestamps, window_duration=config.audio_frame_step * 4 * tokens, axis_dim=axis_dim,
        theta=config.rope_parameters["rope_theta"], max_positions=int(config.max_position_embeddings),
    )  # fmt: skip
    assert torch.equal(got, want)


# The third case has tiles of pass-through channels only (a plain copy in the kernel) and an odd width; the last
# starts its windows half-way (15 s, 45 s, 75 s), where the window index rounds half to even as torch.round does.
@pytest.mark.parametrize(
    ("windows", "tokens", "channels", "axis_dim"),
    [([0, 59], 100, 38, 8), ([3], 17, 33, 16), ([1, 2], 9, 151, 8), ([0.5, 1.5, 2.5], 5, 40, 8)],
)
def test_triton_matches_reference(require_impl, device, windows, tokens, channels, axis_dim):
    require_impl("triton", device)
    dtypes = [torch.float32] if device == "cpu" else [torch.float32, torch.bfloat16, torch.float16]
    timestamps = _timestamps(windows, tokens).to(device)
    for dtype in dtypes:
        gen = torch.Generator().manual_seed(0)
        hidden = (
            torch.randn(len(windows), tokens, channels, generator=gen)
            .to(device, dtype)
            .requires_grad_()
        )
        grad = torch.randn(len(windows), tokens, channels, generator=gen).to(device, dtype)
        kwargs = {"window_duration": 30.0, "axis_dim": axis_dim}
        got = rote(hidden, timestamps, impl="triton", **kwargs)
        want = rote(hidden, timestamps, impl="reference", **kwargs)
        (got_grad,) = torch.autograd.grad(got, hidden, grad)
        (want_grad,) = torch.autograd.grad(want, hidden, grad)
        assert torch.equal(got[..., 2 * axis_dim :], hidden[..., 2 * axis_dim :]), (
            "pass-through channels changed"
        )
        for a, b in [(got, want), (got_grad, want_grad)]:
            err = (a.float() - b.float()).abs()
            if dtype == torch.float32:
                assert err.max().item() <= 1e-5, err.max().item()
            else:
                ulp = 2 ** (-7 if dtype == torch.bfloat16 else -10)
                assert (err <= 2 * ulp * b.float().abs().clamp_min(1.0)).all(), err.max().item()


def test_bad_shapes_are_named():
    with pytest.raises(KernelInputError, match="axis_dim"):
        rote(
            torch.randn(1, 4, 10),
            torch.zeros(1, 4),
            window_duration=30.0,
            axis_dim=6,
            impl="reference",
        )
    with pytest.raises(KernelInputError, match="timestamps"):
        rote(
            torch.randn(1, 4, 10),
            torch.zeros(4),
            window_duration=30.0,
            axis_dim=2,
            impl="reference",
        )
