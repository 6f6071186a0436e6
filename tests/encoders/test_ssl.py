"""HuBERT / WavLM through transformers behind the same encoder interface (raw waveform windows)."""

from __future__ import annotations

import pytest
import torch

from afnext.audio.frontends import WaveformFrontEnd
from afnext.encoders.base import encoder_front_end, encoder_output_lengths
from afnext.encoders.ssl import SSLSpeechEncoder
from afnext.errors import ConfigError
from tests.helpers import TINY_LLM, TINY_SSL

TINY = TINY_SSL


@pytest.mark.parametrize("model_type", ["hubert", "wavlm"])
def test_waveform_windows_to_50hz_frames(model_type):
    enc = SSLSpeechEncoder(model_type=model_type, config=TINY).eval()
    assert encoder_front_end(enc) == WaveformFrontEnd(window_seconds=30.0, sampling_rate=16000)
    assert enc.out_dim == 16 and enc.frame_rate == 50.0
    assert enc.tokens_per_window == 1499  # the conv stack drops the last frame of 30 s
    wave = torch.randn(2, 1, 16000 * 30) * 0.1
    mask = torch.ones(2, 16000 * 30, dtype=torch.bool)
    mask[1, 16000 * 10 :] = False
    wave[1, 0, 16000 * 10 :] = 0
    with torch.no_grad():
        hidden, out_mask = enc(wave, mask)
    assert hidden.shape == (2, 1499, 16)
    expected = encoder_output_lengths(enc, mask.sum(-1))
    assert out_mask.sum(-1).tolist() == expected.tolist() == [1499, 499]


def test_unknown_family_is_a_config_error():
    with pytest.raises(ConfigError, match="model_type"):
        SSLSpeechEncoder(model_type="bert", config={})


def test_rote_windows_start_every_30_s_for_a_50hz_encoder():
    """1499 tokens at 50 Hz per 30 s window: RoTE takes the window length from the encoder, so window 1
    starts at 30 s (not 29.98 s); a time-embedding factory that does not take window_seconds still builds."""
    from afnext import AudioLanguageModel
    from afnext.connectors.mlp import MLPConnector
    from afnext.connectors.rote import RotaryTimeEmbedding
    from afnext.llms.hf import HFCausalLM

    llm = TINY_LLM
    enc = SSLSpeechEncoder(model_type="hubert", config={**TINY, "hidden_size": 40})
    model = AudioLanguageModel.build(enc, MLPConnector, HFCausalLM(config=llm), RotaryTimeEmbedding)
    rote = model.time_embedding
    assert rote.window_seconds == 30.0
    stamps = rote.token_timestamps(torch.tensor([0, 1, 59]), 1499)
    assert stamps[1, 0].item() == 30.0 and stamps[2, 0].item() == 1770.0
    assert stamps[1, 1].item() == pytest.approx(30.02)
    hidden = torch.randn(2, 1499, 40)
    spaced = rote(hidden, torch.tensor([0, 1]))
    plain = RotaryTimeEmbedding(dim=40, frame_rate=50.0)
    assert plain.token_timestamps(torch.tensor([1]), 1499)[0, 0].item() == pytest.approx(29.98)
    assert not torch.allclose(spaced[1], plain(hidden, torch.tensor([0, 1]))[1])
    # AF-Whisper: 750 tokens / 25 Hz is the window, so the checkpoints' formula stays bit for bit.
    whisper = RotaryTimeEmbedding(dim=40, frame_rate=25.0, window_seconds=30.0)
    index = torch.tensor([0, 3, 59])
    legacy = RotaryTimeEmbedding(dim=40, frame_rate=25.0).token_timestamps(index, 750)
    assert torch.equal(whisper.token_timestamps(index, 750), legacy)
    plugin = AudioLanguageModel.build(
        enc,
        MLPConnector,
        HFCausalLM(config=llm),
        lambda dim, frame_rate: RotaryTimeEmbedding(dim, frame_rate),
    )
    assert plugin.time_embedding.window_seconds is None
