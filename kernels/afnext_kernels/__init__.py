"""afnext_kernels: Triton kernels for long-context audio-language models, each with a PyTorch reference.

Public API (scripts outside the project call these): :func:`flash_attn_varlen`, :func:`linear_cross_entropy`,
:func:`rote`, the dispatch controls :func:`set_default_impl` / :func:`get_default_impl` (environment variable
``AFNEXT_KERNELS_IMPL``), and :func:`register` (transformers ``attn_implementation="afnext_varlen"``).
Importing this package needs neither triton nor transformers; they are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from afnext_kernels.attention import flash_attn_varlen, flash_attn_varlen_reference
from afnext_kernels.cross_entropy import linear_cross_entropy, linear_cross_entropy_reference
from afnext_kernels.dispatch import ENV_VAR, get_default_impl, set_default_impl
from afnext_kernels.errors import KernelUnavailableError
from afnext_kernels.rote import rote, rote_reference

if TYPE_CHECKING:
    from afnext_kernels.hf import register

__all__ = [
    "ENV_VAR",
    "KernelUnavailableError",
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


def __getattr__(name: str) -> Any:
    # transformers is heavy and optional for kernel users: import it only when registering.
    if name == "register":
        from afnext_kernels.hf import register

        return register
    raise AttributeError(f"module 'afnext_kernels' has no attribute {name!r}")
