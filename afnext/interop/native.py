"""afnext's own checkpoint format: any composition of parts, rebuilt from its recorded architecture.

A folder holds ``afnext_config.json`` (each part's class and constructor arguments, the model options),
``model.safetensors`` (sharded above 5 GB) and ``tokenizer/``. Loading builds the parts with empty weights,
then assigns the stored tensors; unknown or missing weights are an error that lists them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from afnext.errors import CheckpointError
from afnext.interop.safetensors_io import (
    atomic_dir,
    read_config,
    read_state_dict,
    write_json,
    write_state_dict,
)

__all__ = ["CONFIG_NAME", "FORMAT_VERSION", "load_afnext", "save_afnext"]

CONFIG_NAME = "afnext_config.json"
FORMAT_VERSION = 1
_COMPONENTS = ("encoder", "time_embedding", "connector", "llm")


def _spec(module: Any) -> dict[str, Any] | None:
    if module is None:
        return None
    arch = getattr(module, "arch_kwargs", None)
    if arch is None:
        raise CheckpointError(
            f"{type(module).__name__} has no arch_kwargs(); a component saved in the afnext format must "
            "say how to rebuild itself (return its constructor arguments)"
        )
    cls = type(module)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "kwargs": arch()}


def save_afnext(model: Any, path: str | Path) -> Path:
    """Write ``model`` as an afnext checkpoint folder (atomically)."""
    path = Path(path)
    config = {
        "format_version": FORMAT_VERSION,
        "components": {name: _spec(getattr(model, name)) for name in _COMPONENTS},
        "model": {
            "audio_boundary_tokens": model.audio_boundary_tokens,
            "trainable": list(model.trainable),
        },
    }
    config["components"]["llm"]["kwargs"]["tokenizer"] = "tokenizer"
    with atomic_dir(path) as tmp:
        write_state_dict(tmp, model.state_dict(), metadata={"afnext_format": str(FORMAT_VERSION)})
        model.llm.tokenizer.save_pretrained(tmp / "tokenizer")
        write_json(tmp / CONFIG_NAME, config)
    return path


def _import_class(dotted: str, path: Path) -> type:
    from afnext.plugins import discover_plugins

    allowed = ("afnext.", "afnext_kernels.", *(f"{p.module}." for p in discover_plugins()))
    if not dotted.startswith(allowed):
        raise CheckpointError(
            f"{path / CONFIG_NAME}: component class {dotted!r} is outside afnext and its installed plugins; "
            "afnext only imports classes from those"
        )
    module_name, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"{path / CONFIG_NAME}: cannot import {dotted} ({exc})") from exc


def load_afnext(path: str | Path, **overrides: Any) -> Any:
    """Rebuild an afnext checkpoint.

    Args:
        path: Folder written by :func:`save_afnext`.
        **overrides: ``attn_implementation`` (encoder and LLM), ``dtype``, ``trainable``.
    """
    from accelerate import init_empty_weights

    from afnext.model import AudioLanguageModel

    path = Path(path)
    config = read_config(path, CONFIG_NAME)
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path / CONFIG_NAME}: format_version {config.get('format_version')} is not {FORMAT_VERSION}"
        )
    attn = overrides.pop("attn_implementation", None)
    dtype = overrides.pop("dtype", None)
    parts: dict[str, Any] = {}
    with init_empty_weights():
        for name in _COMPONENTS:
            spec = config["components"].get(name)
            if spec is None:
                parts[name] = None
                continue
            kwargs = dict(spec["kwargs"])
            if name == "llm":
                kwargs["tokenizer"] = str(path / kwargs.get("tokenizer", "tokenizer"))
            if attn is not None and "attn_implementation" in kwargs:
                kwargs["attn_implementation"] = attn
            parts[name] = _import_class(spec["class"], path)(**kwargs)
    options = {**config.get("model", {}), **overrides}
    model = AudioLanguageModel(
        parts["encoder"], parts["connector"], parts["llm"], parts["time_embedding"], **options
    )
    assign_state_dict(model, read_state_dict(path), path)
    if dtype is not None:
        model.to(dtype)
    return model


def assign_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into a model built with empty weights; list missing / unexpected keys on error."""
    expected = set(model.state_dict().keys())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    # Tied output embeddings may be stored once; transformers re-ties them after loading.
    llm = getattr(model, "llm", None)
    tied = llm is not None and getattr(llm.config, "tie_word_embeddings", False)
    if tied:
        missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the model. Missing ({len(missing)}): {missing[:20]}; "
            f"unexpected ({len(unexpected)}): {unexpected[:20]}"
        )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        llm.base.tie_weights()
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise CheckpointError(f"{path}: parameters left without weights: {leftover[:20]}")
