"""Parity with transformers' AF3 and Music Flamingo (AF-Next) classes, tiny and random, float32 on CPU.

Each reference model is saved with ``save_pretrained`` and loaded by afnext from that folder; logits must
agree within 1e-4 on a batch of two samples of different lengths (one over two windows with a padded
tail), greedy ``generate`` must give identical tokens, and afnext -> ``save_pretrained(format="hf")`` ->
transformers must give the same logits again. Beyond that: a sample holding two audios beside one of 70 s,
a ``model_type: audioflamingonext`` folder, and models built by afnext (with and without LoRA) exported to
transformers.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from afnext import AudioLanguageModel
from afnext.connectors.mlp import MLPConnector
from afnext.connectors.rote import RotaryTimeEmbedding
from afnext.data.processor import AudioProcessor
from afnext.encoders.whisper import AFWhisperEncoder
from afnext.llms.hf import HFCausalLM
from tests.helpers import TINY_LLM, chat, save_tiny_hf, tone_mix

pytestmark = (
    pytest.mark.slow
)  # each case runs a 4-window encoder several times (about a minute in all)

ATOL = 1e-4
LLM = TINY_LLM


@pytest.fixture(scope="module", params=["af3", "mf"])
def checkpoint(request, tmp_path_factory):
    """(kind, folder, transformers model, transformers processor) for one checkpoint kind."""
    kind = request.param
    folder = tmp_path_factory.mktemp(f"hf_{kind}")
    ref, processor = save_tiny_hf(folder, kind)
    return kind, folder, ref, processor


@pytest.fixture(scope="module")
def pair(checkpoint):
    """(kind, transformers model, afnext model, inputs) for one checkpoint kind."""
    kind, folder, ref, processor = checkpoint
    ours = AudioLanguageModel.from_pretrained(folder).eval()
    tok = processor.tokenizer
    texts = [
        tok.apply_chat_template(chat("What is it?"), tokenize=False, add_generation_prompt=True),
        tok.apply_chat_template(
            chat("How many beeps?"), tokenize=False, add_generation_prompt=True
        ),
    ]
    # 3 s, and 65 s = three windows with a 5 s tail: the batch mixes lengths and padding.
    inputs = processor(text=texts, audio=[tone_mix(3.0, 1), tone_mix(65.0, 2)], padding=True)
    inputs.pop("num_audio_tokens", None)
    return kind, ref, ours, dict(inputs)


def test_inputs_cover_the_hard_cases(pair):
    kind, _, ours, inputs = pair
    assert inputs["input_features"].shape == (4, 128, 3000)
    assert inputs["input_features_mask"][-1].sum() == 500  # padded tail of the last window
    assert (inputs["attention_mask"] == 0).any()  # the shorter sample is padded
    assert ours.audio_boundary_tokens == (kind == "mf")
    assert (ours.time_embedding is not None) == (kind == "mf")


def assert_same_outputs(ours, ref, inputs, max_new_tokens=5):
    """Logits within ATOL on the real positions and identical greedy tokens."""
    with torch.no_grad():
        expected = ref(**inputs).logits
        got = ours(**inputs).logits
    real = inputs["attention_mask"].bool()
    assert got.shape == expected.shape
    torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)
    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False}
    assert torch.equal(ours.generate(**inputs, **kwargs), ref.generate(**inputs, **kwargs))


def test_logits_and_greedy_tokens_match_transformers(pair):
    _, ref, ours, inputs = pair
    assert_same_outputs(ours, ref, inputs, max_new_tokens=6)


def test_loss_matches_transformers(pair):
    _, ref, ours, inputs = pair
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        expected = ref(**inputs, labels=labels).loss
        got = ours(**inputs, labels=labels).loss
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_hf_export_round_trip(pair, tmp_path):
    kind, ref, ours, inputs = pair
    ours.save_pretrained(tmp_path / "export", format="hf")
    cls = type(ref)
    back = cls.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        expected = ours(**inputs).logits
        got = back(**inputs).logits
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)
    # The folder also loads back into afnext and keeps its kind.
    again = AudioLanguageModel.from_pretrained(tmp_path / "export")
    assert (again.time_embedding is not None) == (kind == "mf")


def test_two_audios_in_one_sample_and_a_long_one(pair):
    """Sample 0 holds two audios, the second over one window (40 s); sample 1 one of 70 s (three windows).

    transformers' processors take one audio per text, so afnext's processor builds the batch; transformers'
    model places each window's tokens in order at the ``<sound>`` runs, as afnext's does.
    """
    kind, ref, ours, _ = pair
    proc = AudioProcessor.from_model(ours)
    convs = [
        [{"role": "user", "content": "<sound> vs <sound>: which is longer?"}],
        [{"role": "user", "content": "<sound>What is it?"}],
    ]
    audio = [[tone_mix(2.0, 1), tone_mix(40.0, 2)], [tone_mix(70.0, 3)]]
    inputs = dict(proc(convs, audio=audio))
    assert inputs["input_features"].shape[0] == 1 + 2 + 3
    bos = (inputs["input_ids"] == ours.audio_bos_token_id).sum(1).tolist()
    assert bos == ([2, 1] if kind == "mf" else [0, 0])
    assert_same_outputs(ours, ref, inputs)


@pytest.mark.parametrize("checkpoint", ["mf"], indirect=True)
def test_audioflamingonext_folder_loads_as_music_flamingo(checkpoint, pair, tmp_path):
    _, folder, ref, _ = checkpoint
    _, _, _, inputs = pair
    afn = tmp_path / "afn"
    shutil.copytree(folder, afn)
    config = json.loads((afn / "config.json").read_text())
    config["model_type"] = "audioflamingonext"
    config["architectures"] = ["AudioFlamingoNextForConditionalGeneration"]
    (afn / "config.json").write_text(json.dumps(config))
    ours = AudioLanguageModel.from_pretrained(afn).eval()
    assert ours.audio_boundary_tokens and ours.time_embedding is not None
    assert ours.time_embedding.theta == config["rope_parameters"]["rope_theta"]
    assert_same_outputs(ours, ref, inputs)


def build_composition(kind: str, lora: bool) -> AudioLanguageModel:
    """An afnext-built model (not loaded from transformers) that transformers' ``kind`` class can hold."""
    torch.manual_seed(0)
    encoder = AFWhisperEncoder(d_model=40, num_layers=1, num_heads=2, ffn_dim=64)
    llm = HFCausalLM(
        config=LLM, lora={"r": 2, "target_modules": ["q_proj", "v_proj"]} if lora else None
    )
    model = AudioLanguageModel.build(
        encoder,
        MLPConnector,
        llm,
        RotaryTimeEmbedding if kind == "mf" else None,
        audio_boundary_tokens=kind == "mf",
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # adapters that change the outputs
    return model


@pytest.mark.parametrize(
    ("kind", "lora"), [("af3", False), ("mf", False), ("mf", True)], ids=["af3", "mf", "mf-lora"]
)
def test_afnext_built_model_exports_to_transformers(kind, lora, tmp_path):
    from transformers import (
        AudioFlamingo3ForConditionalGeneration,
        MusicFlamingoForConditionalGeneration,
    )

    ours = build_composition(kind, lora)
    proc = AudioProcessor.from_model(ours)
    convs = [
        [{"role": "user", "content": "<sound> vs <sound>?"}],
        [{"role": "user", "content": "<sound>What is it?"}],
    ]
    inputs = dict(proc(convs, audio=[[tone_mix(2.0, 1), tone_mix(33.0, 2)], [tone_mix(5.0, 3)]]))
    if lora:  # the adapters matter, so the export must have merged them
        with torch.no_grad(), ours.llm.model.disable_adapter():
            plain = ours(**inputs).logits
        assert not torch.allclose(plain, ours(**inputs).logits, atol=1e-3)
    ours.save_pretrained(tmp_path / "hf", format="hf")
    cls = {
        "af3": AudioFlamingo3ForConditionalGeneration,
        "mf": MusicFlamingoForConditionalGeneration,
    }[kind]
    ref = cls.from_pretrained(tmp_path / "hf").eval()
    assert_same_outputs(ours, ref, inputs)
