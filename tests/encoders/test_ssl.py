"""HuBERT / WavLM through transformers behind the same encoder interface (raw waveform windows)."""

from __future__ import annotations

import pytest
import torch

from afnext.encoders.base import encoder_input_kind, encoder_output_lengths
from afnext.encoders.ssl import SSLSpeechEncoder
from afnext.errors import ConfigError

TINY = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "conv_dim": [16] * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}


@pytest.mark.parametrize("model_type", ["hubert", "wavlm"])
def test_waveform_windows_to_50hz_frames(model_type):
    enc = SSLSpeechEncoder(model_type=model_type, config=TINY).eval()
    assert encoder_input_kind(enc) == "waveform"
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
