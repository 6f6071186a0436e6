"""Connectors: widths from the neighbours, token counts, masks; RoTE equals transformers'."""

from __future__ import annotations

import pytest
import torch

from afnext.connectors.linear import LinearConnector
from afnext.connectors.mlp import MLPConnector
from afnext.connectors.qformer import WindowQFormer
from afnext.connectors.rote import RotaryTimeEmbedding
from afnext.connectors.stack import FrameStackConnector


def _frames(lengths, t=750, d=24):
    hidden = torch.randn(len(lengths), t, d)
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    return hidden, mask


@pytest.mark.parametrize(
    ("connector", "expected_tokens"),
    [
        (LinearConnector(24, 16), [750, 250]),
        (MLPConnector(24, 16), [750, 250]),
        (FrameStackConnector(24, 16, stack=4), [188, 63]),
        (WindowQFormer(24, 16, num_queries=8, num_heads=4), [8, 8]),
    ],
)
def test_token_counts_and_masks(connector, expected_tokens):
    hidden, mask = _frames([750, 250])
    tokens, out_mask = connector(hidden, mask)
    assert tokens.shape[0] == 2 and tokens.shape[-1] == 16
    assert out_mask.sum(-1).tolist() == expected_tokens
    assert connector.output_lengths(torch.tensor([750, 250])).tolist() == expected_tokens
    assert torch.isfinite(tokens).all()


def test_frame_stack_ignores_padding_frames():
    conn = FrameStackConnector(4, 3, stack=2)
    hidden, mask = _frames([3], t=4, d=4)
    out1, _ = conn(hidden, mask)
    hidden2 = hidden.clone()
    hidden2[0, 3] = 1e6  # a padded frame; must not leak into the partial group
    out2, _ = conn(hidden2, mask)
    torch.testing.assert_close(out1, out2)


def test_qformer_output_does_not_depend_on_padding():
    torch.manual_seed(0)
    conn = WindowQFormer(8, 6, num_queries=4, num_heads=2).eval()
    hidden, mask = _frames([5], t=9, d=8)
    out1, _ = conn(hidden, mask)
    hidden[0, 5:] = 123.0
    out2, _ = conn(hidden, mask)
    torch.testing.assert_close(out1, out2)


def test_mlp_names_match_af3_projector():
    conn = MLPConnector(1280, 3584)
    names = sorted(n for n, _ in conn.named_parameters())
    assert names == ["linear_1.bias", "linear_1.weight", "linear_2.bias", "linear_2.weight"]


def test_rote_matches_transformers_music_flamingo():
    from transformers import AudioFlamingo3EncoderConfig, MusicFlamingoConfig, Qwen2Config
    from transformers.models.musicflamingo.modeling_musicflamingo import (
        MusicFlamingoRotaryEmbedding,
        apply_rotary_time_emb,
    )

    config = MusicFlamingoConfig(
        audio_config=AudioFlamingo3EncoderConfig(hidden_size=80, num_attention_heads=4),
        text_config=Qwen2Config(hidden_size=32, num_attention_heads=4, num_key_value_heads=2),
    )
    ref = MusicFlamingoRotaryEmbedding(config)
    rote = RotaryTimeEmbedding(dim=80, frame_rate=25.0)
    window_index = torch.tensor([0, 1, 2, 0, 1])  # two audios: 3 windows then 2
    hidden = torch.randn(5, 750, 80)
    timestamps = rote.token_timestamps(window_index, 750)
    assert timestamps[2, 10].item() == pytest.approx(60.4)
    cos, sin = ref(timestamps, seq_len=750)
    expected = apply_rotary_time_emb(hidden, cos, sin)
    torch.testing.assert_close(rote(hidden, window_index), expected, atol=0, rtol=0)
    # Channels past the rotated ones pass through.
    assert torch.equal(rote(hidden, window_index)[..., 32:], hidden[..., 32:])


def test_rote_takes_any_width_rounding_the_rotated_channels_down_to_even(caplog):
    """A plugin encoder of width 48 with the default factor 0.2: 9 channels per axis becomes 8, and the log
    says so; a width with nothing to rotate is an error naming the factors that work and time_embedding=none."""
    import logging

    from afnext.errors import ConfigError

    with caplog.at_level(logging.INFO, logger="afnext.connectors.rote"):
        rote = RotaryTimeEmbedding(dim=48, frame_rate=25.0)
    assert rote.axis_dim == 8 and "gives 9 channels per axis; rotating 8" in caplog.text
    hidden = torch.randn(2, 10, 48)
    out = rote(hidden, torch.tensor([0, 1]))
    assert out.shape == hidden.shape and torch.equal(out[..., 16:], hidden[..., 16:])
    with pytest.raises(ConfigError, match=r"factors from 0\.4 to 0\.4 work.*time_embedding=none"):
        RotaryTimeEmbedding(dim=5, frame_rate=25.0)
    with pytest.raises(ConfigError, match="partial_rotary_factor"):
        RotaryTimeEmbedding(dim=40, frame_rate=25.0, partial_rotary_factor=0.8)
