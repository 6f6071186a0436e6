"""Checkpoint import and export: afnext's own format and transformers' AF3 / Music Flamingo / AF-Next."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from afnext.errors import CheckpointError, ConfigError
from afnext.interop.hf import HF_MODEL_TYPES, load_hf, save_hf
from afnext.interop.native import CONFIG_NAME, load_afnext, save_afnext
from afnext.interop.safetensors_io import read_config

__all__ = ["load_afnext", "load_hf", "load_pretrained", "save_afnext", "save_hf", "save_pretrained"]


def load_pretrained(path: str | Path, **kwargs: Any) -> Any:
    """Load an afnext checkpoint folder or a transformers AF3 / Music Flamingo / AF-Next folder."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return load_afnext(path, **kwargs)
    if (path / "config.json").is_file():
        model_type = read_config(path).get("model_type")
        if model_type in HF_MODEL_TYPES:
            return load_hf(path, **kwargs)
        raise CheckpointError(
            f"{path}/config.json: model_type {model_type!r} is not an audio-language checkpoint afnext "
            f"reads ({HF_MODEL_TYPES}); an LLM or encoder alone goes in llm.path / encoder presets"
        )
    raise CheckpointError(
        f"{path}: not a checkpoint folder (no {CONFIG_NAME} and no config.json)"
        if path.is_dir()
        else f"{path}: checkpoint folder does not exist"
    )


def save_pretrained(
    model: Any, path: str | Path, *, format: str = "afnext", state_dict: dict | None = None
) -> Path:
    """Save in afnext's format or transformers' (``format='hf'``).

    Args:
        model: The model.
        path: Target folder.
        format: ``afnext`` or ``hf``.
        state_dict: Weights to write instead of ``model.state_dict()`` (afnext format), e.g. the full state dict
            gathered from an FSDP2-sharded model.
    """
    if format == "afnext":
        return save_afnext(model, path, state_dict=state_dict)
    if format == "hf":
        if state_dict is not None:
            raise ConfigError(
                "save_pretrained(format='hf') takes no state_dict; save in afnext format first"
            )
        return save_hf(model, path)
    raise ConfigError(f"save_pretrained: format={format!r} is unknown; use 'afnext' or 'hf'")
