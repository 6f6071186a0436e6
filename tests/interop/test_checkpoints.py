"""Checkpoint folders beyond plain parity: tied embeddings, attention settings, weight-mismatch errors.

Tiny random models, float32 on CPU. transformers' own AF3 / Music Flamingo classes are the reference for
what an HF-format folder means.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from afnext import AudioLanguageModel
from afnext.connectors.mlp import MLPConnector
from afnext.connectors.rote import RotaryTimeEmbedding
from afnext.data.processor import AudioProcessor
from afnext.encoders.whisper import AFWhisperEncoder
from afnext.errors import CheckpointError
from afnext.llms.hf import HFCausalLM
from tests.helpers import TINY_LLM, save_tiny_hf, tiny_hf_configs, tone_mix

# Tied input / output embeddings, as Qwen2.5 0.5B-3B, Qwen3 <= 4B, Llama 3.2.
TIED_LLM = {**TINY_LLM, "tie_word_embeddings": True}
LORA = {"r": 2, "target_modules": ["q_proj", "v_proj"]}


def build_tied(lora=None) -> AudioLanguageModel:
    torch.manual_seed(0)
    enc = AFWhisperEncoder(d_model=40, num_layers=1, num_heads=2, ffn_dim=64)
    llm = HFCausalLM(config=TIED_LLM, lora=lora)
    model = AudioLanguageModel.build(enc, MLPConnector, llm, RotaryTimeEmbedding).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # make the adapters matter
    return model


def is_tied(model: AudioLanguageModel) -> bool:
    base = model.llm.base
    return base.get_output_embeddings().weight is base.get_input_embeddings().weight


def stored_keys(folder) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return set(f.keys())


@pytest.fixture(scope="module")
def batch():
    """Two samples of different lengths (one over a window), built for the tiny tokenizer."""
    proc = AudioProcessor.from_model(build_tied())
    convs = [
        [{"role": "user", "content": "<sound>Q?"}],
        [{"role": "user", "content": "<sound>Why?"}],
    ]
    return proc(convs, audio=[[tone_mix(2.0, 1)], [tone_mix(31.0, 2)]])


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch).logits
    return out[batch["attention_mask"].bool()]


@pytest.mark.parametrize("lora", [None, LORA], ids=["plain", "lora"])
def test_tied_embeddings_are_saved_once_and_tied_again(tmp_path, batch, lora):
    model = build_tied(lora)
    assert is_tied(model)
    model.save_pretrained(tmp_path / "ckpt")
    keys = stored_keys(tmp_path / "ckpt")
    assert not [k for k in keys if "lm_head" in k]
    assert [k for k in keys if k.endswith("embed_tokens.weight")]
    back = AudioLanguageModel.from_pretrained(tmp_path / "ckpt").eval()
    assert is_tied(back) and back.llm.has_lora == (lora is not None)
    torch.testing.assert_close(logits(back, batch), logits(model, batch), atol=0, rtol=0)


def test_tied_embeddings_export_to_hf_format(tmp_path, batch):
    from transformers import MusicFlamingoForConditionalGeneration

    model = build_tied()
    model.save_pretrained(tmp_path / "hf", format="hf")
    # transformers' class never re-ties (``_tied_weights_keys = None``): both are stored.
    keys = stored_keys(tmp_path / "hf")
    assert {"language_model.lm_head.weight", "language_model.model.embed_tokens.weight"} <= keys
    expected = logits(model, batch)
    ref = MusicFlamingoForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    torch.testing.assert_close(logits(ref, batch), expected, atol=1e-5, rtol=0)
    back = AudioLanguageModel.from_pretrained(tmp_path / "hf").eval()
    torch.testing.assert_close(logits(back, batch), expected, atol=1e-5, rtol=0)


@pytest.fixture
def tied_hf_folder(tmp_path):
    """An HF Music Flamingo folder whose text_config ties embeddings but stores a different lm_head."""
    from transformers import (
        AutoTokenizer,
        MusicFlamingoForConditionalGeneration,
        MusicFlamingoProcessor,
        WhisperFeatureExtractor,
    )

    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR

    tok = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    config = tiny_hf_configs(tok, "mf")
    config.text_config.tie_word_embeddings = True
    torch.manual_seed(0)
    ref = MusicFlamingoForConditionalGeneration(config).eval()
    ref.save_pretrained(tmp_path / "hf")
    MusicFlamingoProcessor(WhisperFeatureExtractor(feature_size=128), tok).save_pretrained(
        tmp_path / "hf"
    )
    return tmp_path / "hf", ref


def test_hf_folder_with_tied_text_config_keeps_its_lm_head(tied_hf_folder):
    folder, ref = tied_hf_folder
    assert not torch.equal(ref.lm_head.weight, ref.get_input_embeddings().weight)
    ours = AudioLanguageModel.from_pretrained(folder).eval()
    assert not is_tied(ours)
    torch.testing.assert_close(ours.llm.base.lm_head.weight, ref.lm_head.weight, atol=0, rtol=0)
    ids = torch.tensor([[10, 20, 30, 40]])
    with torch.no_grad():
        torch.testing.assert_close(
            ours(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5, rtol=0
        )


def test_hf_folder_without_lm_head_is_an_error(tied_hf_folder):
    folder, _ = tied_hf_folder
    state = load_file(folder / "model.safetensors")
    del state["language_model.lm_head.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"language_model\.lm_head\.weight"):
        AudioLanguageModel.from_pretrained(folder)


@pytest.fixture(scope="module")
def mf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mf")
    save_tiny_hf(folder, "mf")
    return folder


def test_hf_weight_mismatch_lists_every_key_under_checkpoint_names(mf_folder, tmp_path):
    folder = tmp_path / "bad"
    shutil.copytree(mf_folder, folder)
    state = load_file(folder / "model.safetensors")
    del state["multi_modal_projector.linear_2.bias"]
    state["foo.bar"] = torch.zeros(1)  # no rule places it
    state["audio_tower.extra"] = torch.zeros(1)  # placed, but the model has no such weight
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        AudioLanguageModel.from_pretrained(folder)
    message = str(err.value)
    assert str(folder) in message
    missing = "multi_modal_projector.linear_2.bias (afnext: connector.linear_2.bias)"
    assert f"Missing (1): ['{missing}']" in message
    assert "unknown (2): ['audio_tower.extra', 'foo.bar']" in message
    assert "encoder.tower.extra" not in message


def attn(model: AudioLanguageModel) -> tuple[str, str]:
    return model.encoder.tower.config._attn_implementation, model.llm.config._attn_implementation


def test_attention_setting_goes_to_the_llm(mf_folder, tmp_path):
    llm_only = AudioLanguageModel.from_pretrained(mf_folder, attn_implementation="eager")
    assert attn(llm_only) == ("sdpa", "eager")
    both = AudioLanguageModel.from_pretrained(
        mf_folder, attn_implementation="eager", encoder_attn_implementation="eager"
    )
    assert attn(both) == ("eager", "eager")
    # afnext's format: the encoder keeps the setting it was saved with unless told otherwise.
    both.save_pretrained(tmp_path / "ckpt")
    llm_only = AudioLanguageModel.from_pretrained(tmp_path / "ckpt", attn_implementation="sdpa")
    assert attn(llm_only) == ("eager", "sdpa")
    again = AudioLanguageModel.from_pretrained(
        tmp_path / "ckpt", encoder_attn_implementation="sdpa"
    )
    assert attn(again) == ("sdpa", "eager")


@pytest.mark.slow  # flex_attention compiles on first use (about 10 s)
@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("clang++")),
    reason="flex_attention on CPU compiles C++ (needs g++ or clang++)",
)
def test_flex_attention_llm_matches_sdpa(mf_folder):
    flex = AudioLanguageModel.from_pretrained(mf_folder, attn_implementation="flex_attention")
    sdpa = AudioLanguageModel.from_pretrained(mf_folder).eval()
    assert attn(flex) == ("sdpa", "flex_attention")
    flex.eval()
    proc = AudioProcessor.from_model(sdpa)
    convs = [
        [{"role": "user", "content": "<sound>Q"}],
        [{"role": "user", "content": "<sound>Q longer"}],
    ]
    batch = proc(convs, audio=[[tone_mix(2.0, 1)], [tone_mix(12.0, 2)]])
    torch.testing.assert_close(logits(flex, batch), logits(sdpa, batch), atol=1e-5, rtol=0)
