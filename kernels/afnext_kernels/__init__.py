"""afnext_kernels: Triton kernels for long-context audio-language models, each with a PyTorch reference.

Public API (scripts outside the project call these): :func:`flash_attn_varlen`, :func:`linear_cross_entropy`,
:func:`rote` and their references, the loss module :class:`LinearCrossEntropyLoss`, the dispatch controls
:func:`set_default_impl` / :func:`get_default_impl` (environment variable ``AFNEXT_KERNELS_IMPL``), and
:func:`register` (transformers ``attn_implementation="afnext_varlen"``).

Laid out as Liger-Kernel: ``ops/<op>.py`` (Triton kernels, autograd Function, launch) beside
``ops/<op>_reference.py`` (PyTorch), ``functional.py`` (validation and dispatch), ``modules.py`` (``nn.Module``).

Importing this package imports neither triton nor transformers, nor even torch: the ops are imported on first
access, because ``afnext.errors`` imports :mod:`afnext_kernels.errors` (and so this file) and ``import afnext``
stays cheap for the command line. Triton modules load on the first Triton call, transformers on :func:`register`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from afnext_kernels.dispatch import ENV_VAR, get_default_impl, set_default_impl
from afnext_kernels.errors import KernelUnavailableError

if TYPE_CHECKING:
    from afnext_kernels.functional import flash_attn_varlen, linear_cross_entropy, rote
    from afnext_kernels.hf import register
    from afnext_kernels.modules import LinearCrossEntropyLoss
    from afnext_kernels.ops.flash_attn_varlen_reference import flash_attn_varlen_reference
    from afnext_kernels.ops.linear_cross_entropy_reference import linear_cross_entropy_reference
    from afnext_kernels.ops.rote_reference import rote_reference

__all__ = [
    "ENV_VAR",
    "KernelUnavailableError",
    "LinearCrossEntropyLoss",
    "flash_attn_varlen",
    "flash_attn_varlen_reference",
    "get_default_impl",
    "linear_cross_entropy",
    "linear_cross_entropy_reference",
    "register",
    "rote",
    "rote_reference",
    "set_default_impl",
]

# Public name -> module that defines it, imported on first access.
_LAZY = {
    "LinearCrossEntropyLoss": "afnext_kernels.modules",
    "flash_attn_varlen": "afnext_kernels.functional",
    "flash_attn_varlen_reference": "afnext_kernels.ops.flash_attn_varlen_reference",
    "linear_cross_entropy": "afnext_kernels.functional",
    "linear_cross_entropy_reference": "afnext_kernels.ops.linear_cross_entropy_reference",
    "register": "afnext_kernels.hf",
    "rote": "afnext_kernels.functional",
    "rote_reference": "afnext_kernels.ops.rote_reference",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'afnext_kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
