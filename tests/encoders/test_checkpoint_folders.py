"""Encoders loaded from whole-model checkpoint folders, and connector widths checked against neighbours.

AF-Whisper is read out of full AF3 / Music Flamingo folders (weights under ``audio_tower.``, sizes in the
nested ``audio_config``) and must give what transformers' own audio tower of that model gives; HuBERT /
WavLM folders written by ``save_pretrained`` must give what the transformers model gives.
"""

from __future__ import annotations

import json

import pytest
import torch

from afnext import AudioLanguageModel
from afnext.connectors.mlp import MLPConnector
from afnext.encoders.ssl import SSLSpeechEncoder
from afnext.encoders.whisper import AFWhisperEncoder
from afnext.errors import CheckpointError, ConfigError
from afnext.llms.hf import HFCausalLM
from tests.helpers import TINY_LLM, TINY_SSL, tiny_hf_configs

ATOL = 1e-5

# Sizes unlike AudioFlamingo3EncoderConfig's defaults and unlike the text model's, so reading the wrong
# config block (or falling back to defaults) cannot load.
AUDIO_SIZES = {
    "hidden_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "intermediate_size": 40,
    "max_source_positions": 50,  # 1 s windows of 100 log-mel frames
    "activation_function": "relu",
}


def _save_full_model(folder, kind: str):
    """A tiny random transformers AF3 ("af3") or Music Flamingo ("mf") model saved to ``folder``."""
    from transformers import (
        AudioFlamingo3ForConditionalGeneration,
        AutoTokenizer,
        MusicFlamingoForConditionalGeneration,
    )

    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR

    config = tiny_hf_configs(AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR), kind)
    for key, value in AUDIO_SIZES.items():
        setattr(config.audio_config, key, value)
    cls = (
        AudioFlamingo3ForConditionalGeneration
        if kind == "af3"
        else MusicFlamingoForConditionalGeneration
    )
    torch.manual_seed(0)
    model = cls(config).eval()
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("kind", ["af3", "mf", "afnext"])
def test_af_whisper_from_full_model_folder_matches_audio_tower(tmp_path, kind):
    from safetensors import safe_open

    ref = _save_full_model(tmp_path, "af3" if kind == "af3" else "mf")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["audio_config"]["hidden_size"] == 24 != config["text_config"]["hidden_size"]
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = f.keys()
    assert any(k.startswith("audio_tower.") for k in keys)
    assert not any(k.startswith(("encoder.", "model.")) for k in keys)
    if kind == "afnext":  # AF-Next folders are Music Flamingo's layout under their own model_type
        config["model_type"] = "audioflamingonext"
        (tmp_path / "config.json").write_text(json.dumps(config))

    enc = AFWhisperEncoder.from_pretrained(tmp_path).eval()
    assert enc.out_dim == 24 and enc.tokens_per_window == 25
    assert enc.config.activation_function == "relu"
    feats = torch.randn(2, 128, 100)
    mask = torch.ones(2, 100, dtype=torch.long)
    mask[1, 61:] = 0  # padded tail
    with torch.no_grad():
        expected = ref.model.audio_tower(feats, input_features_mask=mask).last_hidden_state
        got, out_mask = enc(feats, mask)
    assert got.shape == expected.shape == (2, 25, 24)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    assert out_mask.sum(-1).tolist() == [25, 15]


def test_af_whisper_from_in_memory_layout(tmp_path):
    """transformers' in-memory key names (``model.audio_tower.*``) load too."""
    from safetensors.torch import save_file

    ref = _save_full_model(tmp_path, "af3")
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    assert any(k.startswith("model.audio_tower.") for k in state)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    enc = AFWhisperEncoder.from_pretrained(tmp_path).eval()
    for name, value in ref.model.audio_tower.state_dict().items():
        torch.testing.assert_close(enc.tower.state_dict()[name], value, atol=0, rtol=0)


def test_af_whisper_names_the_missing_tower_weight(tmp_path):
    from safetensors.torch import load_file, save_file

    _save_full_model(tmp_path, "mf")
    state = load_file(str(tmp_path / "model.safetensors"))
    dropped = "audio_tower.layers.1.fc2.weight"
    del state[dropped]
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"layers\.1\.fc2\.weight"):
        AFWhisperEncoder.from_pretrained(tmp_path)


SSL_TINY = TINY_SSL


@pytest.mark.parametrize(
    ("model_type", "norm"),
    [("hubert", "group"), ("wavlm", "group"), ("hubert", "layer"), ("wavlm", "layer")],
)
def test_ssl_encoder_from_folder_matches_transformers(tmp_path, model_type, norm):
    """Group-norm models take zero-padded windows without a mask, layer-norm ones with the mask
    (transformers' Wav2Vec2 / HuBERT / WavLM docs); afnext must give exactly that model's output."""
    from transformers import AutoConfig, AutoModel

    layer = norm == "layer"
    cfg = AutoConfig.for_model(
        model_type, **SSL_TINY, feat_extract_norm=norm, do_stable_layer_norm=layer
    )
    torch.manual_seed(0)
    ref = AutoModel.from_config(cfg).eval()
    ref.save_pretrained(tmp_path)
    enc = SSLSpeechEncoder(path=str(tmp_path)).eval()
    assert enc.out_dim == 16 and enc.frame_rate == 50.0
    assert type(enc.model) is type(ref)

    wave = torch.randn(2, 8000) * 0.1  # 0.5 s windows
    mask = torch.ones(2, 8000, dtype=torch.long)
    mask[1, 5000:] = 0
    wave[1, 5000:] = 0.0
    with torch.no_grad():
        expected = ref(input_values=wave, attention_mask=mask if layer else None).last_hidden_state
        got, out_mask = enc(wave.unsqueeze(1), mask.bool())
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    lengths = ref._get_feat_extract_output_lengths(mask.sum(-1))
    assert out_mask.sum(-1).tolist() == lengths.tolist() == [24, 15]


def test_ssl_folder_of_another_family_is_a_clear_error(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(
        BertConfig(
            vocab_size=32,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
        )
    ).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="bert"):
        SSLSpeechEncoder(path=str(tmp_path))
    with pytest.raises(CheckpointError, match=r"config\.json"):
        SSLSpeechEncoder(path=str(tmp_path / "missing"))


# --------------------------------------------------------------------------------------------------
# Connector widths must match the neighbours (afnext/model.py)
# --------------------------------------------------------------------------------------------------
LLM = TINY_LLM


@pytest.fixture(scope="module")
def neighbours():
    torch.manual_seed(0)
    enc = AFWhisperEncoder(
        d_model=16, num_layers=1, num_heads=2, ffn_dim=32, max_source_positions=50
    )
    return enc, HFCausalLM(config=LLM)


def test_connector_matching_its_neighbours_builds(neighbours):
    enc, llm = neighbours
    model = AudioLanguageModel(enc, MLPConnector(in_dim=16, out_dim=32), llm)
    assert model.connector.in_dim == enc.out_dim and model.connector.out_dim == llm.hidden_size


@pytest.mark.parametrize(
    ("in_dim", "out_dim", "names"),
    [
        (20, 32, ("connector.in_dim=20", "encoder.out_dim=16")),
        (16, 48, ("connector.out_dim=48", "hidden size is 32")),
    ],
    ids=["in_dim", "out_dim"],
)
def test_connector_size_mismatch_names_the_keys(neighbours, in_dim, out_dim, names):
    enc, llm = neighbours
    with pytest.raises(ConfigError) as err:
        AudioLanguageModel(enc, MLPConnector(in_dim=in_dim, out_dim=out_dim), llm)
    msg = str(err.value)
    assert all(name in msg for name in names)
    assert "leave connector sizes unset" in msg


def test_connector_without_out_dim_is_a_config_error(neighbours):
    enc, llm = neighbours
    with pytest.raises(
        ConfigError, match=r"the connector Linear lacks \['in_dim', 'out_dim', 'output_lengths'\]"
    ):
        AudioLanguageModel(enc, torch.nn.Linear(16, 32), llm)
