"""Every shipped model-core YAML composes and builds: tiny ones for real, full-size ones on ``meta``."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from afnext.cli import build_on_meta, compose_config, config_groups

MODEL_GROUPS = ("encoder", "time_embedding", "connector", "llm", "preset")
FULL_SIZE = {
    "whisper_large_v3",
    "qwen2_5_7b",
    "qwen2_5_7b_afnext",
    "qwen2_5_7b_af3",
    "af3",
    "afnext",
}
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
    cfg = compose_config("info", overrides)
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
    "recipe", ["preset=afnext", "experiment=af3", "experiment=afnext_instruct"]
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

    model = build_on_meta(compose_config("info", ["preset=afnext"]))
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
