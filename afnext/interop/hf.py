"""transformers' AF3 / Music Flamingo / AF-Next checkpoints: import into afnext, export back.

Key layout of the released checkpoints (and what transformers 5 ``save_pretrained`` writes):
``audio_tower.*``, ``multi_modal_projector.linear_{1,2}.*``, ``language_model.model.*``,
``language_model.lm_head.*``; transformers' in-memory layout (``model.audio_tower.*``,
``model.language_model.*``, ``lm_head.*``) is read too (``transformers/conversion_mapping.py``,
pattern ``qwen2_audio``). AF-Next is architecturally Music Flamingo (RoTE + sound bos/eos tokens).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from afnext.errors import CheckpointError
from afnext.interop.native import assign_state_dict, listing, weight_mismatch
from afnext.storage import (
    atomic_dir,
    read_config,
    read_state_dict,
    write_json,
    write_state_dict,
)

__all__ = ["HF_MODEL_TYPES", "load_hf", "save_hf"]

HF_MODEL_TYPES = ("audioflamingo3", "musicflamingo", "audioflamingonext")

# (checkpoint pattern, afnext prefix); the LLM is a transformers *ForCausalLM at ``llm.model``.
_IMPORT_RULES = [
    (re.compile(r"^(model\.)?audio_tower\."), "encoder.tower."),
    (re.compile(r"^(model\.)?multi_modal_projector\."), "connector."),
    (re.compile(r"^language_model\.lm_head\."), "llm.model.lm_head."),
    (re.compile(r"^language_model\.model\."), "llm.model.model."),
    (re.compile(r"^model\.language_model\."), "llm.model.model."),
    (re.compile(r"^lm_head\."), "llm.model.lm_head."),
]
_EXPORT_RULES = [
    ("encoder.tower.", "audio_tower."),
    ("connector.", "multi_modal_projector."),
    ("llm.model.lm_head.", "language_model.lm_head."),
    ("llm.model.model.", "language_model.model."),
]


def _rename(key: str) -> str | None:
    """afnext's name for a checkpoint weight; None when no rule places it."""
    for pattern, prefix in _IMPORT_RULES:
        if pattern.match(key):
            return pattern.sub(prefix, key, count=1)
    return None


def _match_weights(
    model: Any, state: dict[str, torch.Tensor], path: Path
) -> dict[str, torch.Tensor]:
    """``state`` under afnext's names, or one CheckpointError naming every mismatch by its checkpoint name.

    Raises:
        CheckpointError: Weights of the checkpoint that no rule places or the model lacks (unknown), and
            weights the model needs that the checkpoint lacks (missing: the released layout's name, then
            afnext's), all listed at once.
    """
    names: dict[str, str] = {}  # afnext name -> checkpoint name
    unknown: list[str] = []
    for key in state:
        new = _rename(key)
        # Unplaced, or a second copy of one weight (two layouts mixed in one folder).
        if new is None or new in names:
            unknown.append(key)
        else:
            names[new] = key
    missing, unexpected = weight_mismatch(model, names)
    unknown = sorted([*unknown, *(names[k] for k in unexpected)])
    if missing or unknown:
        described = [f"{_checkpoint_name(k)} (afnext: {k})" for k in missing]
        raise CheckpointError(
            f"{path}: weights do not match config.json. Missing {listing(described)}; unknown "
            f"{listing(unknown)}. An AF3 / Music Flamingo checkpoint holds audio_tower.*, "
            "multi_modal_projector.*, language_model.model.* and language_model.lm_head.* (or transformers' "
            "in-memory model.audio_tower.*, model.multi_modal_projector.*, model.language_model.*, lm_head.*) "
            "for the sizes in config.json; re-save it with transformers' save_pretrained, or fix config.json"
        )
    return {new: state[old] for new, old in names.items()}


def _checkpoint_name(key: str) -> str:
    """The released layout's name for afnext weight ``key`` (``key`` itself if it has none)."""
    for prefix, target in _EXPORT_RULES:
        if key.startswith(prefix):
            return target + key[len(prefix) :]
    return key


def load_hf(
    path: str | Path,
    model_cls: type,
    *,
    attn_implementation: str = "sdpa",
    encoder_attn_implementation: str = "sdpa",
    dtype: torch.dtype | None = None,
    trainable: tuple[str, ...] = ("encoder", "connector", "llm"),
    lora: dict[str, Any] | None = None,
) -> Any:
    """Load a transformers AF3 / Music Flamingo / AF-Next checkpoint folder as an AudioLanguageModel.

    Args:
        path: The checkpoint folder (config.json, safetensors, processor / tokenizer files).
        model_cls: The model class to assemble (``AudioLanguageModel``; it calls this loader).
        attn_implementation: The LLM's attention back end (``sdpa``, ``eager``, ``flex_attention``, ...).
        encoder_attn_implementation: The encoder's (transformers' ``AudioFlamingo3Encoder`` supports
            ``sdpa``, ``eager``, ``flash_attention_2`` and ``afnext_varlen``, not ``flex_attention``).
        dtype: Cast the weights to this dtype.
        trainable: Parts that train.
        lora: peft ``LoraConfig`` keys to add adapters to the LLM after loading.

    The LLM's output embeddings are never tied to its input embeddings, whatever
    ``text_config.tie_word_embeddings`` says: transformers' ``AudioFlamingo3ForConditionalGeneration`` and
    ``MusicFlamingoForConditionalGeneration`` set ``_tied_weights_keys = None`` (transformers 5,
    ``modeling_audioflamingo3.py``), so they use the stored ``language_model.lm_head.weight``, and so does
    afnext; a folder without it is an error (transformers would start it from random values).
    """
    from accelerate import init_empty_weights

    from afnext.connectors.mlp import MLPConnector
    from afnext.connectors.rote import RotaryTimeEmbedding
    from afnext.encoders.whisper import AFWhisperEncoder, _encoder_config_dict
    from afnext.llms.hf import HFCausalLM

    path = Path(path)
    config = read_config(path)
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise CheckpointError(
            f"{path}/config.json: model_type {model_type!r} is not one of {HF_MODEL_TYPES}"
        )
    if "text_config" not in config:
        raise CheckpointError(f"{path}/config.json: no text_config")
    enc = _encoder_config_dict(config, path)
    text_config = {k: v for k, v in config["text_config"].items() if k not in ("architectures",)}
    text_config.setdefault("model_type", "qwen2")
    text_config["tie_word_embeddings"] = False  # see the docstring: transformers' classes never tie
    with init_empty_weights():
        encoder = AFWhisperEncoder(
            d_model=enc["d_model"],
            num_layers=enc["encoder_layers"],
            num_heads=enc["encoder_attention_heads"],
            ffn_dim=enc["encoder_ffn_dim"],
            num_mel_bins=enc["num_mel_bins"],
            max_source_positions=enc["max_source_positions"],
            activation_function=enc.get("activation_function", "gelu"),
            attn_implementation=encoder_attn_implementation,
        )
        llm = HFCausalLM(
            config=text_config, tokenizer=str(path), attn_implementation=attn_implementation
        )
        connector = MLPConnector(
            in_dim=encoder.out_dim,
            out_dim=llm.hidden_size,
            act=config.get("projector_hidden_act", "gelu"),
            bias=config.get("projector_bias", True),
        )
        time_embedding = None
        if model_type != "audioflamingo3":
            rope = config.get("rope_parameters") or {}
            theta = float(rope.get("rope_theta", 1200.0))
            time_embedding = RotaryTimeEmbedding(
                dim=encoder.out_dim,
                frame_rate=1.0 / (config.get("audio_frame_step", 0.01) * 4),
                theta=theta,
                partial_rotary_factor=float(rope.get("partial_rotary_factor", 0.2)),
                max_positions=int(config.get("max_position_embeddings", theta)),
            )
    model = model_cls(
        encoder,
        connector,
        llm,
        time_embedding,
        audio_boundary_tokens=model_type != "audioflamingo3",
        trainable=("encoder", "connector", "llm"),
    )
    for name, key in (
        ("audio_token_id", model.audio_token_id),
        ("audio_bos_token_id", model.audio_bos_token_id),
        ("audio_eos_token_id", model.audio_eos_token_id),
    ):
        if name in config and config[name] != key:
            raise CheckpointError(
                f"{path}/config.json: {name}={config[name]} but the tokenizer in the folder maps it to {key}"
            )
    assign_state_dict(model, _match_weights(model, read_state_dict(path), path), path)
    if dtype is not None:
        model.to(dtype)
    if (path / "generation_config.json").is_file():
        from transformers import GenerationConfig

        llm.base.generation_config = GenerationConfig.from_pretrained(path)
    if lora:
        llm.add_lora(lora)
    model.set_trainable(trainable)
    return model


def _merged_llm_state(llm: Any) -> dict[str, torch.Tensor]:
    """The LLM's weights with LoRA merged in, under the plain ``*ForCausalLM`` names."""
    if not llm.has_lora:
        return dict(llm.model.state_dict())
    llm.model.merge_adapter()
    try:
        state = {}
        for key, value in llm.model.state_dict().items():
            if "lora_" in key:
                continue
            key = key.removeprefix("base_model.model.").replace(".base_layer.", ".")
            state[key] = value.clone()
        return state
    finally:
        llm.model.unmerge_adapter()


def save_hf(model: Any, path: str | Path) -> Path:
    """Write a folder that transformers loads with ``AudioFlamingo3ForConditionalGeneration`` (no time
    embedding) or ``MusicFlamingoForConditionalGeneration`` (RoTE), processor and tokenizer included.

    Raises:
        CheckpointError: The composition has no transformers counterpart (another encoder, connector or
            time embedding); the message says which part.
    """
    from transformers import (
        AudioFlamingo3Config,
        AudioFlamingo3Processor,
        MusicFlamingoConfig,
        MusicFlamingoProcessor,
        WhisperFeatureExtractor,
    )

    from afnext.connectors.mlp import MLPConnector
    from afnext.connectors.rote import RotaryTimeEmbedding
    from afnext.encoders.whisper import AFWhisperEncoder

    if not isinstance(model.encoder, AFWhisperEncoder):
        raise CheckpointError(
            f"format='hf' needs the AF-Whisper encoder, this model has {type(model.encoder).__name__}; "
            "save with format='afnext'"
        )
    conn = model.connector
    if not isinstance(conn, MLPConnector) or conn.hidden_dim != conn.out_dim:
        raise CheckpointError(
            f"format='hf' needs the AF3 MLP projector (hidden_dim == out_dim), this model has "
            f"{type(conn).__name__}; save with format='afnext'"
        )
    te = model.time_embedding
    if te is not None and not (
        isinstance(te, RotaryTimeEmbedding)
        and te.max_positions == int(te.theta)
        and te.frame_rate == 25.0
    ):
        raise CheckpointError(
            "format='hf' supports no time embedding (AF3) or RoTE with max_positions == theta at 25 Hz "
            "(Music Flamingo / AF-Next); save with format='afnext'"
        )
    if model.audio_boundary_tokens != (te is not None):
        raise CheckpointError(
            "format='hf': transformers pairs RoTE with sound bos/eos tokens (Music Flamingo) and no "
            "time embedding with none (AF3); this model mixes them, save with format='afnext'"
        )
    llm = model.llm
    text_config = llm.config.to_dict()
    text_config.pop("architectures", None)
    common = {
        "audio_config": model.encoder.config.to_dict(),
        "text_config": text_config,
        "audio_token_id": model.audio_token_id,
        "projector_hidden_act": conn.act_name,
        "projector_bias": conn.linear_1.bias is not None,
    }
    dtype = next(model.parameters()).dtype
    tokenizer = llm.tokenizer
    feature_extractor = WhisperFeatureExtractor(feature_size=model.encoder.n_mels)
    if te is None:
        hf_config = AudioFlamingo3Config(**common)
        hf_config.architectures = ["AudioFlamingo3ForConditionalGeneration"]
        processor = AudioFlamingo3Processor(feature_extractor, tokenizer)
    else:
        hf_config = MusicFlamingoConfig(
            **common,
            audio_bos_token_id=model.audio_bos_token_id,
            audio_eos_token_id=model.audio_eos_token_id,
            audio_frame_step=1.0 / (te.frame_rate * 4),
            rope_parameters={
                "rope_type": "default",
                "rope_theta": te.theta,
                "partial_rotary_factor": te.partial_rotary_factor,
            },
        )
        hf_config.architectures = ["MusicFlamingoForConditionalGeneration"]
        processor = MusicFlamingoProcessor(feature_extractor, tokenizer)
    hf_config.dtype = dtype
    state: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith("llm."):
            continue
        state[_export_key(key)] = value
    for key, value in _merged_llm_state(llm).items():
        state[_export_key(f"llm.model.{key}")] = value
    path = Path(path)
    with atomic_dir(path) as tmp:
        write_state_dict(tmp, state)
        write_json(tmp / "config.json", hf_config.to_dict())
        llm.base.generation_config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return path


def _export_key(key: str) -> str:
    name = _checkpoint_name(key)
    if name != key:
        return name
    raise CheckpointError(
        f"format='hf': weight {key!r} has no place in an AF3 / Music Flamingo checkpoint"
    )
