"""afnext's own checkpoint format: any composition of parts, rebuilt from its recorded architecture.

A folder holds ``afnext_config.json`` (each part's class and constructor arguments, the model options),
``model.safetensors`` (sharded above 5 GB) and ``tokenizer/``. Loading builds the parts with empty weights,
then assigns the stored tensors; unknown or missing weights are an error that lists them. An LLM whose
output embeddings are tied to its input embeddings stores them once and is tied again on load.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
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

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "assign_state_dict",
    "load_afnext",
    "save_afnext",
    "tied_output_embedding_key",
    "weight_mismatch",
]

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


def save_afnext(model: Any, path: str | Path, *, state_dict: dict | None = None) -> Path:
    """Write ``model`` as an afnext checkpoint folder (atomically).

    Args:
        model: The model.
        path: Target folder.
        state_dict: Its weights when not ``model.state_dict()`` (gathered from a sharded model).
    """
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
    state = dict(model.state_dict() if state_dict is None else state_dict)
    # Tied output embeddings are stored once, under the input embeddings' name, and re-tied on load (as
    # transformers' save_pretrained / from_pretrained do).
    tied = tied_output_embedding_key(model)
    if tied is not None:
        state.pop(tied, None)
    with atomic_dir(path) as tmp:
        write_state_dict(tmp, state, metadata={"afnext_format": str(FORMAT_VERSION)})
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
        **overrides: ``attn_implementation`` (the LLM's), ``encoder_attn_implementation`` (default: the
            one recorded in the checkpoint), ``dtype``, ``trainable``. The two attention settings are apart
            because back ends differ in reach: transformers' Whisper-style encoder has no ``flex_attention``.
    """
    from accelerate import init_empty_weights

    from afnext.model import AudioLanguageModel

    path = Path(path)
    config = read_config(path, CONFIG_NAME)
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path / CONFIG_NAME}: format_version {config.get('format_version')} is not {FORMAT_VERSION}"
        )
    attn = {
        "llm": overrides.pop("attn_implementation", None),
        "encoder": overrides.pop("encoder_attn_implementation", None),
    }
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
            if attn.get(name) is not None and "attn_implementation" in kwargs:
                kwargs["attn_implementation"] = attn[name]
            parts[name] = _import_class(spec["class"], path)(**kwargs)
    options = {**config.get("model", {}), **overrides}
    model = AudioLanguageModel(
        parts["encoder"], parts["connector"], parts["llm"], parts["time_embedding"], **options
    )
    assign_state_dict(model, read_state_dict(path), path)
    if dtype is not None:
        model.to(dtype)
    return model


def _embedding_keys(model: torch.nn.Module) -> tuple[str, str] | None:
    """State-dict names of the LLM's (input, output) embedding weights; None without an output layer."""
    base = getattr(getattr(model, "llm", None), "base", None)
    if base is None or base.get_output_embeddings() is None:
        return None
    wanted = {id(base.get_input_embeddings()): "in", id(base.get_output_embeddings()): "out"}
    found: dict[str, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if id(module) in wanted:
            found.setdefault(wanted[id(module)], f"{name}.weight")
    if len(found) != 2:
        return None
    return found["in"], found["out"]


def _ties_embeddings(model: torch.nn.Module) -> bool:
    llm = getattr(model, "llm", None)
    return llm is not None and bool(getattr(llm.config, "tie_word_embeddings", False))


def tied_output_embedding_key(model: torch.nn.Module) -> str | None:
    """State-dict name of the LLM's output embeddings when they are tied to the input embeddings.

    Tied means both: the LLM's config says ``tie_word_embeddings`` (so loading re-ties) and the two are one
    tensor in memory (so nothing is lost by storing one).
    """
    keys = _embedding_keys(model)
    if keys is None or not _ties_embeddings(model):
        return None
    base = model.llm.base
    if base.get_output_embeddings().weight is not base.get_input_embeddings().weight:
        return None
    return keys[1]


def weight_mismatch(model: torch.nn.Module, keys: Iterable[str]) -> tuple[list[str], list[str]]:
    """``(missing, unexpected)`` weight names of ``keys`` against ``model``'s state dict.

    The LLM's output embeddings are not missing when its config ties them to the input embeddings.
    """
    keys = set(keys)
    expected = set(model.state_dict().keys())
    missing = sorted(expected - keys)
    unexpected = sorted(keys - expected)
    emb = _embedding_keys(model)
    if emb is not None and _ties_embeddings(model):
        missing = [k for k in missing if k != emb[1]]
    return missing, unexpected


def listing(names: list[str], limit: int = 30) -> str:
    """``names`` for an error message: count, then at most ``limit`` of them."""
    more = f" ... and {len(names) - limit} more" if len(names) > limit else ""
    return f"({len(names)}): {names[:limit]}{more}"


def assign_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` into a model built with empty weights; list missing / unexpected keys on error.

    When the LLM's config ties its output embeddings to the input ones, they are re-tied after loading
    unless the state holds output embeddings that differ from the input ones: then both are kept and the
    config's ``tie_word_embeddings`` is turned off (transformers' ``PreTrainedModel.tie_weights`` does the
    same when both keys are in a checkpoint with different values).
    """
    missing, unexpected = weight_mismatch(model, state)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the model. Missing {listing(missing)}; "
            f"unexpected {listing(unexpected)}. Load the folder with the architecture it was saved from"
        )
    emb = _embedding_keys(model) if _ties_embeddings(model) else None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    model.load_state_dict(state, strict=False, assign=True)
    if emb is not None:
        in_key, out_key = emb
        if out_key in state and not torch.equal(state[out_key], state[in_key]):
            model.llm.config.tie_word_embeddings = False
        else:
            model.llm.base.tie_weights()
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover:
        raise CheckpointError(f"{path}: parameters left without weights: {leftover[:20]}")
