"""Every shipped YAML composes and builds: the model groups' options and every experiment found on disk, tiny ones
for real (with a forward), full-size ones on ``meta``."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from afnext.config import build_on_meta, compose_config, config_groups

MODEL_GROUPS = ("encoder", "time_embedding", "connector", "llm")
FULL_SIZE = {"whisper_large_v3", "qwen2_5_7b", "qwen2_5_7b_afnext", "qwen2_5_7b_af3"}
NEEDS_PATH = {"whisper_large_v3_pretrained", "qwen2_5_7b_pretrained"}


def _options() -> list[tuple[str, str]]:
    groups = config_groups()
    return [(g, o) for g in MODEL_GROUPS for o in groups.get(g, [])]


def test_every_model_group_has_options():
    groups = config_groups()
    for group in MODEL_GROUPS:
        assert groups.get(group), f"conf/{group}/ is empty"


@pytest.mark.parametrize(("group", "option"), _options())
def test_option_composes_and_builds(group, option, tiny_checkpoints):
    overrides = [f"{group}={option}"]
    if option in NEEDS_PATH:
        key = "encoder.path" if group == "encoder" else "llm.path"
        overrides.append(f"{key}={tiny_checkpoints[option]}")
    cfg = compose_config("train", overrides)
    if option in FULL_SIZE:
        model = build_on_meta(cfg)
        assert next(model.parameters()).is_meta
    else:
        model = instantiate(cfg.model, _convert_="all")
        assert not next(model.parameters()).is_meta
    counts = model.parameter_counts()
    assert counts["all"]["total"] > 0
    assert counts["encoder"]["total"] > 0 and counts["llm"]["total"] > 0


@pytest.mark.parametrize(
    "recipe", ["experiment=afnext", "experiment=af3", "experiment=afnext_instruct"]
)
def test_full_size_recipes_take_a_pretrained_llm(recipe):
    """The recipes' own LLM sizes live in their llm option, so swapping in released weights leaves the LLM
    with a path and no config (HFCausalLM takes exactly one)."""
    llm = compose_config("train", [recipe, "llm=qwen2_5_7b_pretrained", "llm.path=/ckpt/q"]).llm
    assert llm.path == "/ckpt/q" and "config" not in llm
    sized = compose_config("train", [recipe]).llm
    assert sized.config.vocab_size == (152064 if recipe == "experiment=af3" else 151672)


def test_afnext_preset_parameter_count_equals_transformers_reference():
    """The full AF-Next build has exactly the parameters of MusicFlamingoForConditionalGeneration at the
    released dimensions (Whisper-large-v3 encoder, Qwen2.5-7B 128K, the vocabulary of its tokenizer: 151,672,
    the <|sound_eos|> id 151671 + 1)."""
    from transformers import (
        AudioFlamingo3EncoderConfig,
        MusicFlamingoConfig,
        MusicFlamingoForConditionalGeneration,
        Qwen2Config,
    )

    model = build_on_meta(compose_config("train", ["experiment=afnext"]))
    text = Qwen2Config(
        vocab_size=151672,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=131072,
        rope_theta=15300000.0,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        ref = MusicFlamingoForConditionalGeneration(
            MusicFlamingoConfig(audio_config=AudioFlamingo3EncoderConfig(), text_config=text)
        )
    expected = sum(p.numel() for p in ref.parameters())
    counts = model.parameter_counts()
    assert counts["all"]["total"] == expected
    assert counts["encoder"]["total"] == sum(p.numel() for p in ref.model.audio_tower.parameters())
    assert counts["connector"]["total"] == 1280 * 3584 + 3584 + 3584 * 3584 + 3584
    assert counts["time_embedding"]["total"] == 0
    # Whisper's positional table is frozen by construction, as in transformers.
    assert counts["encoder"]["trainable"] == counts["encoder"]["total"] - 1500 * 1280


@pytest.mark.parametrize("experiment", config_groups()["experiment"])
def test_every_experiment_on_disk_builds(experiment):
    """Each global recipe in conf/experiment/ (the list found on disk, not kept by hand): on ``meta``, and a tiny
    one also for real, through a forward of one sample with audio."""
    from afnext.data.processor import AudioProcessor
    from tests.helpers import tone_mix

    cfg = compose_config("train", [f"experiment={experiment}"])
    model = build_on_meta(cfg)
    assert next(model.parameters()).is_meta and model.parameter_counts()["all"]["total"] > 0
    if "tiny" not in experiment:
        return
    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="all")
    proc = AudioProcessor.from_model(model, padding_side="right")
    conv = [
        {"role": "user", "content": "<sound>What?"},
        {"role": "assistant", "content": "A tone."},
    ]
    batch = proc([conv], audio=[[tone_mix(1.5)]], return_labels=True)
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_the_afnext_instruct_recipe_counts_8_27_billion_parameters(capsys):
    """The contract command: ``afnext info experiment=afnext_instruct --json``."""
    import json

    from afnext.cli import main

    assert main(["info", "experiment=afnext_instruct", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["all"]["total"] == pytest.approx(8.27e9, rel=2e-3)
    assert counts["llm"]["class"] == "HFCausalLM(Qwen2ForCausalLM)"
