"""Rebuilding components from a checkpoint's specs, and nothing else.

A checkpoint folder comes from anywhere: whatever it names must never make afnext run code of the folder's
choosing. A spec (``{"_target_": "pkg.module.Class", **arguments}``, see :mod:`afnext.specs`) is rebuilt only
when, checked before anything it names is called:

* its module is afnext's or an installed plugin's (``afnext.plugins`` entry point), and nothing else is imported;
* it names a class, a subclass of ``torch.nn.Module``, that a config of that component's group declares (a
  ``_target_`` in ``conf/<kind>/*.yaml`` of afnext or a plugin: the config group is the registry);
* every argument is one the class takes, and no argument is itself an object to build (a nested ``_target_``).

After it is built, the component is checked against its kind's protocol (``afnext/<package>/base.py``) by the
model.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from afnext.errors import CheckpointError
from afnext.specs import TARGET, init_signature

__all__ = ["COMPONENTS", "build_component", "component_targets", "resolve_component_class"]

COMPONENTS = ("encoder", "time_embedding", "connector", "llm")
"""The component kinds of a model, in data-path order (the one list of them)."""


@cache
def component_targets(kind: str) -> frozenset[str]:
    """Every ``_target_`` the configs of group ``kind`` name, afnext's and the installed plugins'."""
    import yaml

    from afnext.plugins import afnext_conf_dir, discover_plugins

    roots = [afnext_conf_dir(), *(p.conf_dir for p in discover_plugins() if p.conf_dir)]
    targets: set[str] = set()
    for root in roots:
        for file in sorted((Path(root) / kind).glob("*.yaml")):
            try:
                data = yaml.safe_load(file.read_text()) or {}
            except yaml.YAMLError:
                continue
            target = data.get(TARGET) if isinstance(data, dict) else None
            if isinstance(target, str):
                targets.add(target)
                head, _, last = target.rpartition(".")
                if last[:1].islower() and head.rpartition(".")[2][:1].isupper():
                    targets.add(
                        head
                    )  # a classmethod (AFWhisperEncoder.from_pretrained) declares its class
    return frozenset(targets)


def _allowed_modules() -> tuple[str, ...]:
    from afnext.plugins import discover_plugins

    return ("afnext.", *(f"{p.module}." for p in discover_plugins()))


def resolve_component_class(kind: str, target: Any, source: str) -> type:
    """The class a spec names, after checking it may be built (see the module docstring).

    Args:
        kind: ``encoder``, ``time_embedding``, ``connector`` or ``llm``.
        target: The spec's ``_target_``.
        source: Where the spec came from, for messages (``folder/afnext_config.json``).

    Raises:
        CheckpointError: Anything but an afnext or plugin component class of that kind.
    """
    if kind not in COMPONENTS:
        raise CheckpointError(f"{source}: unknown component {kind!r}; components are {COMPONENTS}")
    if not isinstance(target, str) or "." not in target:
        raise CheckpointError(
            f"{source}: the {kind}'s _target_ must be a dotted class name, got {target!r}"
        )
    if not target.startswith(_allowed_modules()):
        raise CheckpointError(
            f"{source}: the {kind} names {target!r}, outside afnext and its installed plugins; afnext builds "
            "components only from those (install the plugin that provides it)"
        )
    if target not in component_targets(kind):
        raise CheckpointError(
            f"{source}: {target!r} is not a {kind} component: no config in the {kind} group (conf/{kind}/*.yaml "
            "of afnext or a plugin) names it"
        )
    module_name, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"{source}: cannot import the {kind} class {target} ({exc})") from exc
    import torch

    if not inspect.isclass(obj) or not issubclass(obj, torch.nn.Module):
        what = (
            "a function"
            if callable(obj) and not inspect.isclass(obj)
            else f"a {type(obj).__name__}"
        )
        if inspect.isclass(obj):
            what = "a class that is not a torch.nn.Module"
        raise CheckpointError(
            f"{source}: the {kind}'s _target_ {target} is {what}, not a component class"
        )
    return obj


def build_component(kind: str, spec: Mapping[str, Any], source: str, **overrides: Any) -> Any:
    """Build a component from its spec, after every check (see the module docstring).

    Args:
        kind: The component kind.
        spec: ``{"_target_": ..., **arguments}``.
        source: Where the spec came from, for messages.
        **overrides: Arguments to replace, only where the class takes them (``attn_implementation``).

    Raises:
        CheckpointError: The spec names what afnext must not build, or an argument the class does not take.
    """
    if not isinstance(spec, Mapping) or TARGET not in spec:
        raise CheckpointError(
            f"{source}: the {kind} spec must be a mapping with a {TARGET}, got {spec!r}"
        )
    cls = resolve_component_class(kind, spec[TARGET], source)
    arguments = {k: v for k, v in spec.items() if not (k.startswith("_") and k.endswith("_"))}
    for key, value in arguments.items():
        if _builds_something(value):
            raise CheckpointError(
                f"{source}: the {kind}'s argument {key} names an object to build ({TARGET}); checkpoints hold "
                "plain arguments only"
            )
    signature = init_signature(cls)
    parameters = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(k for k in arguments if k not in parameters and not takes_any)
    if unknown:
        raise CheckpointError(
            f"{source}: {spec[TARGET]} takes no argument {unknown} (it takes {sorted(parameters)}); the "
            "checkpoint was written by another version of the component"
        )
    arguments.update({k: v for k, v in overrides.items() if v is not None and k in parameters})
    try:
        signature.bind(**arguments)
    except TypeError as exc:
        raise CheckpointError(
            f"{source}: cannot build {spec[TARGET]} from its spec: {exc}"
        ) from exc
    return cls(**arguments)


def _builds_something(value: Any) -> bool:
    if isinstance(value, Mapping):
        return TARGET in value or any(_builds_something(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_builds_something(v) for v in value)
    return False
