"""One place that decides which implementation of an op runs.

Precedence, first that applies: the call's ``impl=`` argument (anything but ``"auto"``), the process default
set by :func:`set_default_impl` (what a config sets), the environment variable ``AFNEXT_KERNELS_IMPL``, and
finally ``"auto"``. ``"auto"`` means Triton for CUDA tensors and the PyTorch reference for everything else;
it never switches after a failure: a Triton path that cannot run raises an error that says what to do.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from afnext_kernels.errors import KernelConfigError

if TYPE_CHECKING:  # only a tensor's ``.device`` is read: importing afnext_kernels needs no torch
    import torch

__all__ = [
    "ATTENTION_IMPLS",
    "ENV_VAR",
    "IMPLS",
    "get_default_impl",
    "resolve_impl",
    "set_default_impl",
]

ENV_VAR = "AFNEXT_KERNELS_IMPL"
IMPLS: tuple[str, ...] = ("auto", "triton", "reference")
ATTENTION_IMPLS: tuple[str, ...] = (*IMPLS, "xformers", "flash_attn")

_default_impl: str | None = None


def _check(impl: str, allowed: tuple[str, ...], source: str) -> str:
    if impl not in allowed:
        raise KernelConfigError(
            f"{source}={impl!r} is not an implementation; choose one of {list(allowed)}."
        )
    return impl


def set_default_impl(impl: str | None) -> None:
    """Set the process-wide default implementation (``None`` returns to the environment / ``"auto"``).

    Args:
        impl: ``"auto"``, ``"triton"``, ``"reference"`` (attention also takes ``"xformers"``, ``"flash_attn"``;
            other ops then use ``"auto"``), or ``None``.
    """
    global _default_impl
    _default_impl = (
        None if impl is None else _check(impl, ATTENTION_IMPLS, "set_default_impl(impl)")
    )


def get_default_impl() -> str:
    """The implementation ``impl="auto"`` defers to: the process default, else ``AFNEXT_KERNELS_IMPL``, else auto."""
    if _default_impl is not None:
        return _default_impl
    env = os.environ.get(ENV_VAR, "").strip()
    return _check(env, ATTENTION_IMPLS, ENV_VAR) if env else "auto"


def resolve_impl(
    impl: str, tensor: torch.Tensor, *, allowed: tuple[str, ...] = IMPLS, op: str = "op"
) -> str:
    """Turn a requested implementation into the one that runs.

    Args:
        impl: The call's ``impl`` argument.
        tensor: A representative input (its device decides ``"auto"``).
        allowed: Implementations this op has.
        op: The op's public name, for messages.

    Returns:
        One of ``allowed`` other than ``"auto"``.
    """
    requested = _check(impl, allowed, f"{op}(impl)")
    if requested == "auto":
        requested = get_default_impl()
        # A default naming an attention-only backend leaves the other ops on their own auto choice.
        if requested not in allowed:
            requested = "auto"
    if requested == "auto":
        return "triton" if tensor.device.type == "cuda" else "reference"
    return requested
