"""``afnext export --format hf``: a folder transformers' (and so vLLM's) AF-Next class and processor load, whose
generation defaults and stop tokens give afnext's greedy answers."""

from __future__ import annotations

import json

import pytest
import torch

from afnext import AudioLanguageModel
from afnext.cli import main
from afnext.connectors.mlp import MLPConnector
from afnext.connectors.rote import RotaryTimeEmbedding
from afnext.data.processor import AudioProcessor
from afnext.encoders.whisper import AFWhisperEncoder
from afnext.inference.engine import InferenceEngine, Request
from afnext.inference.export import export_hf
from afnext.inference.generation import GenerationSettings
from afnext.llms.hf import HFCausalLM
from tests.helpers import TINY_LLM, tone_mix
from tests.inference.tiny import save_tiny_model

SETTINGS = GenerationSettings(max_new_tokens=8, repetition_penalty=1.2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    encoder = AFWhisperEncoder(d_model=40, num_layers=1, num_heads=2, ffn_dim=64)
    built = AudioLanguageModel.build(
        encoder, MLPConnector, HFCausalLM(config=TINY_LLM), RotaryTimeEmbedding
    ).eval()
    with torch.no_grad():
        built.llm.base.lm_head.weight.mul_(
            30.0
        )  # decisive greedy choices (see tests/inference/tiny.py)
    return built


def test_export_loads_in_transformers_and_answers_like_afnext(model, tmp_path):
    from transformers import AutoProcessor, MusicFlamingoForConditionalGeneration

    out = export_hf(model, tmp_path / "hf", generation=SETTINGS)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == model.llm.stop_token_ids()
    assert (generation["max_new_tokens"], generation["repetition_penalty"]) == (8, 1.2)
    assert generation["do_sample"] is False
    processor = AutoProcessor.from_pretrained(out)
    assert type(processor).__name__ == "MusicFlamingoProcessor" and processor.max_audio_len == 1800
    reference = MusicFlamingoForConditionalGeneration.from_pretrained(out).eval()

    ours = AudioProcessor.from_model(model)
    engine = InferenceEngine(model, ours, settings=SETTINGS)
    for seconds, seed in ((2.0, 1), (31.0, 2)):
        audio = tone_mix(seconds, seed)
        messages = [{"role": "user", "content": "<sound>What is it?"}]
        text, _, _ = ours.render(messages, add_generation_prompt=True)
        inputs = processor(text=[text], audio=[audio])
        inputs.pop("num_audio_tokens", None)
        with torch.no_grad():
            tokens = reference.generate(**inputs)  # the folder's own generation defaults
        expected = processor.tokenizer.decode(
            tokens[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        assert expected and engine.generate([Request(messages, [audio])])[0].text == expected


def test_export_cli_writes_the_folder_and_names_parts_without_a_counterpart(
    model, tmp_path, capsys
):
    model.save_pretrained(tmp_path / "ours")
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(tmp_path / "ours"),
                "--format",
                "hf",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["architectures"] == ["MusicFlamingoForConditionalGeneration"]
    generation = json.loads((tmp_path / "o" / "generation_config.json").read_text())
    assert (
        generation["max_new_tokens"] == 1024 and generation["repetition_penalty"] == 1.2
    )  # instruct
    capsys.readouterr()
    demo_like = save_tiny_model(
        tmp_path / "demo"
    )  # frame-stacking connector: no transformers class
    assert main(["export", "--checkpoint", str(demo_like), str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "FrameStackConnector" in err and "format='afnext'" in err
    assert not (tmp_path / "x").exists()
