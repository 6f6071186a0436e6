"""Checkpoints: afnext's own format, transformers' AF3 / Music Flamingo / AF-Next folders, and finding the model
folder a user points at.

This layer sits below the model: it builds components and reads / writes tensors, and takes the model class to
assemble from its caller (``AudioLanguageModel.from_pretrained``), so it never imports the model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from afnext.errors import CheckpointError, ConfigError
from afnext.interop.hf import HF_MODEL_TYPES, load_hf, save_hf
from afnext.interop.native import CONFIG_NAME, load_afnext, save_afnext
from afnext.storage import read_config

__all__ = [
    "load_afnext",
    "load_hf",
    "load_pretrained",
    "resolve_checkpoint",
    "save_afnext",
    "save_hf",
    "save_pretrained",
]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A model folder from what a user points at: a model folder, a run folder or a stage folder.

    Raises:
        CheckpointError: Nothing loadable there.
    """
    path = Path(path)
    if (path / CONFIG_NAME).is_file() or (path / "config.json").is_file():
        return path
    if (path / "final.json").is_file():
        return Path(json.loads((path / "final.json").read_text())["model"])
    if (path / "model").is_dir():
        return resolve_checkpoint(path / "model")
    done = sorted((path / "stages").glob("*/DONE")) if (path / "stages").is_dir() else []
    if done:
        return done[-1].parent / "model"
    raise CheckpointError(
        f"{path}: no model here. Point at a run folder (with final.json or stages/*/model), a stage "
        "folder, or a model folder (afnext_config.json or a transformers config.json)."
    )


def load_pretrained(path: str | Path, model_cls: type, **kwargs: Any) -> Any:
    """Load an afnext checkpoint folder or a transformers AF3 / Music Flamingo / AF-Next folder as ``model_cls``."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return load_afnext(path, model_cls, **kwargs)
    if (path / "config.json").is_file():
        model_type = read_config(path).get("model_type")
        if model_type in HF_MODEL_TYPES:
            return load_hf(path, model_cls, **kwargs)
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
