"""afnext's own checkpoint format: any composition of components, rebuilt from their specs.

A folder holds ``afnext_config.json`` (each component's spec, ``{"_target_": class, **arguments}``, as its config
composed it: see :mod:`afnext.specs`; and the model's options), ``model.safetensors`` (sharded above 5 GB) and
``tokenizer/``. Loading checks every spec before anything it names runs (:mod:`afnext.interop.components`),
builds the components with empty weights, then assigns the stored tensors; unknown or missing weights are an
error that lists them. An LLM whose output embeddings are tied to its input embeddings stores them once and is
tied again on load. Folders of the first format (``{"class", "kwargs"}`` per component) still load.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from afnext.errors import CheckpointError
from afnext.interop.components import COMPONENTS, build_component
from afnext.specs import TARGET, component_spec
from afnext.storage import (
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
FORMAT_VERSION = 2
_OPTIONS = ("audio_boundary_tokens", "trainable", "loss_impl")


def save_afnext(model: Any, path: str | Path, *, state_dict: dict | None = None) -> Path:
    """Write ``model`` as an afnext checkpoint folder (atomically).

    Args:
        model: The model (an ``AudioLanguageModel``).
        path: Target folder.
        state_dict: Its weights when not ``model.state_dict()`` (gathered from a sharded model).

    Raises:
        CheckpointError: A component without a spec (see :func:`afnext.specs.component_spec`).
    """
    path = Path(path)
    components = {
        name: None if getattr(model, name) is None else component_spec(name, getattr(model, name))
        for name in COMPONENTS
    }
    components["llm"]["tokenizer"] = "tokenizer"  # the folder's own copy
    config = {
        "format_version": FORMAT_VERSION,
        "components": components,
        "model": {k: getattr(model, k) for k in _OPTIONS if hasattr(model, k)},
    }
    config["model"]["trainable"] = list(config["model"].get("trainable", ()))
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


def _specs(config: dict[str, Any], source: str) -> dict[str, Any]:
    """The components' specs of a config of either format."""
    version = config.get("format_version")
    components = config.get("components")
    if version not in (1, FORMAT_VERSION) or not isinstance(components, dict):
        raise CheckpointError(
            f"{source}: format_version {version!r} with components {type(components).__name__}; afnext reads "
            f"formats 1 and {FORMAT_VERSION}"
        )
    unknown = sorted(set(components) - set(COMPONENTS))
    if unknown:
        raise CheckpointError(
            f"{source}: unknown components {unknown}; components are {COMPONENTS}"
        )
    if version == FORMAT_VERSION:
        return {name: components.get(name) for name in COMPONENTS}
    specs: dict[str, Any] = {}
    for name in COMPONENTS:
        old = components.get(name)
        if old is None:
            specs[name] = None
        elif isinstance(old, dict) and isinstance(old.get("kwargs"), dict):
            specs[name] = {TARGET: old.get("class"), **old["kwargs"]}
        else:
            raise CheckpointError(f"{source}: the {name} entry is malformed: {old!r}")
    return specs


def load_afnext(path: str | Path, model_cls: type, **overrides: Any) -> Any:
    """Rebuild an afnext checkpoint.

    Every spec is checked before anything is built (:func:`afnext.interop.components.build_component`).

    Args:
        path: Folder written by :func:`save_afnext`.
        model_cls: The model class to assemble (``AudioLanguageModel``; it calls this loader).
        **overrides: ``attn_implementation`` (the LLM's), ``encoder_attn_implementation`` (default: the
            one recorded in the checkpoint), ``dtype``, ``trainable``, ``loss_impl``. The two attention settings
            are apart because back ends differ in reach: transformers' Whisper-style encoder has no
            ``flex_attention``.

    Raises:
        CheckpointError: A spec names what afnext must not build, or weights that do not match.
    """
    from accelerate import init_empty_weights

    path = Path(path)
    source = str(path / CONFIG_NAME)
    config = read_config(path, CONFIG_NAME)
    specs = _specs(config, source)
    if specs.get("llm") is None or specs.get("encoder") is None or specs.get("connector") is None:
        raise CheckpointError(f"{source}: a model needs an encoder, a connector and an llm")
    attn = {
        "llm": overrides.pop("attn_implementation", None),
        "encoder": overrides.pop("encoder_attn_implementation", None),
    }
    dtype = overrides.pop("dtype", None)
    parts: dict[str, Any] = {}
    with init_empty_weights():
        for name in COMPONENTS:
            spec = specs[name]
            if spec is None:
                parts[name] = None
                continue
            spec = dict(spec)
            if name == "llm":
                spec["tokenizer"] = str(path / str(spec.get("tokenizer") or "tokenizer"))
            parts[name] = build_component(name, spec, source, attn_implementation=attn.get(name))
    options = {k: v for k, v in (config.get("model") or {}).items() if k in _OPTIONS}
    options.update(overrides)
    model = model_cls(
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
