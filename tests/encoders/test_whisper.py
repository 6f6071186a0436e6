"""AF-Whisper: shapes, true token counts, and loading from Whisper / AF3 / AF-Next folders."""

from __future__ import annotations

import pytest
import torch

from afnext.encoders.whisper import AFWhisperEncoder
from afnext.errors import CheckpointError


def _tiny(**kw) -> AFWhisperEncoder:
    return AFWhisperEncoder(d_model=32, num_layers=1, num_heads=2, ffn_dim=64, **kw).eval()


def test_window_yields_750_tokens_at_25_hz():
    enc = _tiny()
    assert enc.out_dim == 32 and enc.frame_rate == 25.0 and enc.tokens_per_window == 750
    assert enc.output_lengths(torch.tensor([3000, 1234, 1, 4])).tolist() == [
        750,
        308,
        0,
        1,
    ]  # transformers AF3: (n-1)//2+1 then (c-2)//2+1


def test_forward_shapes_and_padded_tail_mask():
    enc = _tiny()
    feats = torch.randn(2, 128, 3000)
    mask = torch.ones(2, 3000, dtype=torch.bool)
    mask[1, 1000:] = False
    with torch.no_grad():
        hidden, out_mask = enc(feats, mask)
    assert hidden.shape == (2, 750, 32)
    assert out_mask.sum(-1).tolist() == [750, 250]


def test_packed_varlen_attention_matches_padded_sdpa():
    """``attn_implementation=afnext_varlen`` (registered on demand) runs the windows as one packed call of
    their valid frames; real tokens match padded SDPA (the reference kernel on CPU, float32)."""
    torch.manual_seed(0)
    sdpa = _tiny(max_source_positions=100)
    torch.manual_seed(0)
    packed = _tiny(max_source_positions=100, attn_implementation="afnext_varlen")
    from afnext.specs import recorded_spec

    assert recorded_spec(packed)["attn_implementation"] == "afnext_varlen"
    feats = torch.randn(3, 128, 200)
    mask = torch.ones(3, 200, dtype=torch.bool)
    mask[2, 77:] = False  # partial last window
    with torch.no_grad():
        want, want_mask = sdpa(feats, mask)
        got, got_mask = packed(feats, mask)
    assert torch.equal(want_mask, got_mask) and int(got_mask[2].sum()) == 19
    torch.testing.assert_close(got[got_mask], want[want_mask], rtol=1e-5, atol=1e-5)


def test_matches_transformers_audio_tower(tmp_path):
    from transformers import AudioFlamingo3EncoderConfig
    from transformers.models.audioflamingo3.modeling_audioflamingo3 import AudioFlamingo3Encoder

    torch.manual_seed(0)
    ref = AudioFlamingo3Encoder(
        AudioFlamingo3EncoderConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    ).eval()
    ref.save_pretrained(tmp_path)
    enc = AFWhisperEncoder.from_pretrained(tmp_path).eval()
    feats = torch.randn(2, 128, 3000)
    mask = torch.ones(2, 3000, dtype=torch.long)
    mask[1, 2000:] = 0
    with torch.no_grad():
        expected = ref(feats, input_features_mask=mask).last_hidden_state
        got, _ = enc(feats, mask)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager", "afnext_varlen"])
def test_short_windows_skip_their_padding_and_match_the_full_forward(attn):
    """Windows shorter than 30 s run only the frames their valid tokens depend on (the longest one's plus the
    conv stem's two): valid tokens and every gradient equal transformers' forward over the padded windows."""
    torch.manual_seed(0)
    enc = _tiny(attn_implementation=attn).eval()
    feats = torch.randn(3, 128, 3000, requires_grad=True)
    mask = torch.zeros(3, 3000, dtype=torch.long)
    for row, frames in enumerate((1234, 77, 1)):
        mask[row, :frames] = 1
    assert enc.frames_needed(mask.sum(-1), 3000) == 1236
    got, got_mask = enc(feats, mask)
    assert got.shape[1] < 750 and got_mask.sum(-1).tolist() == [308, 19, 0]
    full = enc.tower(feats, input_features_mask=mask).last_hidden_state
    want = full[:, : got.shape[1]][got_mask]
    torch.testing.assert_close(got[got_mask], want, atol=1e-5, rtol=1e-5)
    trained = [p for p in enc.parameters() if p.requires_grad]
    got[got_mask].square().sum().backward()
    grads = [p.grad.clone() for p in trained] + [feats.grad.clone()]
    enc.zero_grad()
    feats.grad = None
    want.square().sum().backward()
    for a, b in zip(grads, [p.grad for p in trained] + [feats.grad]):
        torch.testing.assert_close(
            a, b, atol=1e-4, rtol=1e-4
        )  # float32 sums in another order (CI: 2.1e-5)
    # in the full forward too, no valid token depends on a frame past the ones kept
    assert feats.grad[:, :, :1236].abs().sum() > 0 and not feats.grad[:, :, 1236:].any()


def test_loads_whisper_checkpoint_weights(tiny_checkpoints):
    from transformers import WhisperModel

    folder = tiny_checkpoints["whisper_large_v3_pretrained"]
    whisper = WhisperModel.from_pretrained(folder)
    enc = AFWhisperEncoder.from_pretrained(folder)
    assert enc.out_dim == whisper.config.d_model
    for name, value in whisper.encoder.state_dict().items():
        torch.testing.assert_close(enc.tower.state_dict()[name], value, atol=0, rtol=0)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json"):
        AFWhisperEncoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="bert"):
        AFWhisperEncoder.from_pretrained(tmp_path)


def test_flex_attention_is_a_config_error_for_the_encoder():
    from afnext.errors import ConfigError

    with pytest.raises(ConfigError, match=r"encoder\.attn_implementation=flex_attention"):
        AFWhisperEncoder(
            d_model=16, num_layers=1, num_heads=2, ffn_dim=32, attn_implementation="flex_attention"
        )
