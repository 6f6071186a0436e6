"""What a component was built from: its class and arguments, as a Hydra config names them.

A checkpoint keeps each component's spec, ``{"_target_": "pkg.module.Class", **arguments}``, and rebuilds the
component from it (:mod:`afnext.interop.components`), so a component needs nothing beyond its interface to be
saved and loaded. Specs come from three places, first found wins:

1. the component's optional ``checkpoint_spec()`` (for a component that read files when it was built, such as an
   LLM loaded from a folder: it describes its architecture without them);
2. the spec recorded when it was built: by :class:`RecordsSpec` for afnext's own classes (every argument, defaults
   included), by the config builder for a class Hydra instantiated (its composed config), or by
   ``AudioLanguageModel.build`` for a partial it finished with its neighbours' sizes;
3. none: saving fails with an error that says how to build the component so it can be saved.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Mapping
from typing import Any

from afnext.errors import CheckpointError

__all__ = [
    "TARGET",
    "RecordsSpec",
    "check_protocol",
    "component_spec",
    "init_signature",
    "jsonable_spec",
    "qualified_name",
    "record_spec",
    "recorded_spec",
    "spec_from_partial",
]

TARGET = "_target_"
_ATTR = "_afnext_spec"


def qualified_name(obj: Any) -> str:
    """``module.QualName`` of a class or function, as ``_target_`` names it."""
    return f"{obj.__module__}.{obj.__qualname__}"


def record_spec(module: Any, spec: Mapping[str, Any]) -> None:
    """Remember what ``module`` was built from (kept out of ``nn.Module``'s attribute machinery)."""
    module.__dict__[_ATTR] = dict(spec)


def recorded_spec(module: Any) -> dict[str, Any] | None:
    """The spec recorded for ``module``, if any."""
    spec = module.__dict__.get(_ATTR) if hasattr(module, "__dict__") else None
    return dict(spec) if spec is not None else None


def init_signature(cls: type) -> inspect.Signature:
    """The signature of ``cls(...)`` from its ``__init__`` (not a metaclass's ``__call__``), without ``self``."""
    signature = inspect.signature(cls.__init__)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


class RecordsSpec(type):
    """Metaclass of afnext's component classes: every instance records the class and all constructor arguments
    (defaults included) it was built with, however it was built (a config, Python code, a classmethod such as
    ``from_pretrained`` calling the class)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = super().__call__(*args, **kwargs)
        signature = init_signature(cls)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:  # pragma: no cover - the call above would have failed first
            return instance
        bound.apply_defaults()
        arguments: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                if value:
                    return instance  # positional varargs have no names to record
            else:
                arguments[name] = value
        record_spec(instance, {TARGET: qualified_name(cls), **arguments})
        return instance


def spec_from_partial(factory: Any, **finished: Any) -> dict[str, Any] | None:
    """The spec of what ``factory(**finished)`` builds, when ``factory`` is a ``functools.partial`` of a class
    (Hydra's ``_partial_: true``); None for anything else."""
    if not isinstance(factory, functools.partial) or not inspect.isclass(factory.func):
        return None
    if factory.args:
        return None
    return {TARGET: qualified_name(factory.func), **factory.keywords, **finished}


def component_spec(name: str, module: Any) -> dict[str, Any]:
    """The spec a checkpoint stores for component ``name`` (see the module docstring).

    Raises:
        CheckpointError: The component has no spec.
    """
    hook = getattr(module, "checkpoint_spec", None)
    spec = hook() if callable(hook) else recorded_spec(module)
    if spec is None:
        raise CheckpointError(
            f"the {name} ({type(module).__name__}) cannot be saved: nothing records how it was built. Build it "
            f"from a config (a YAML in conf/{name}/ with its _target_, as `afnext train` does), or set "
            f"`afnext.specs.record_spec(module, {{'_target_': '{qualified_name(type(module))}', **arguments}})`"
        )
    if TARGET not in spec:
        spec = {TARGET: qualified_name(type(module)), **spec}
    return jsonable_spec(name, spec)


def jsonable_spec(name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with values JSON can hold (dtypes as names, paths as strings, tuples as lists).

    Raises:
        CheckpointError: A value JSON cannot hold (a module, a tensor, a function), naming its key.
    """

    def convert(key: str, value: Any) -> Any:
        import torch

        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, torch.dtype):
            return str(value).removeprefix("torch.")
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, Mapping):
            return {str(k): convert(f"{key}.{k}", v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(f"{key}[{i}]", v) for i, v in enumerate(value)]
        raise CheckpointError(
            f"the {name}'s argument {key} is a {type(value).__name__}, which a checkpoint cannot store; give "
            "the component plain arguments (numbers, strings, lists, dicts)"
        )

    return {str(k): convert(str(k), v) for k, v in spec.items()}


def protocol_members(protocol: type) -> list[str]:
    """The members a ``typing.Protocol`` declares: its annotated attributes and its methods."""
    names: list[str] = []
    for klass in reversed(protocol.__mro__):
        if klass in (object,) or klass.__module__ == "typing":
            continue
        names += [n for n in getattr(klass, "__annotations__", {}) if not n.startswith("_")]
        names += [n for n, v in vars(klass).items() if callable(v) and not n.startswith("_")]
    return list(dict.fromkeys(names))


def check_protocol(kind: str, module: Any, protocol: type, where: str) -> None:
    """Check that a built component has every member of its kind's protocol.

    Args:
        kind: The component kind, for the message (``encoder``).
        module: The built component.
        protocol: Its kind's ``typing.Protocol``.
        where: The file that defines the protocol, for the message.

    Raises:
        ConfigError: A member is missing (all missing members are named).
    """
    import torch

    from afnext.errors import ConfigError

    missing = []
    for name in protocol_members(protocol):
        if name == "forward":
            if (
                isinstance(module, torch.nn.Module)
                and type(module).forward is torch.nn.Module.forward
            ):
                missing.append(name)
        elif not hasattr(module, name):
            missing.append(name)
    if missing:
        members = ", ".join(protocol_members(protocol))
        raise ConfigError(
            f"the {kind} {type(module).__name__} lacks {missing}: a {protocol.__name__} has {members} "
            f"(see {where}); add them to the class"
        )
