"""Lazy Triton access: one loader for every op, a clear error where Triton is missing, interpreter detection,
autotuning that steps aside.

Each op's Triton implementation is one module, ``afnext_kernels/ops/<op>.py``, that imports ``triton`` at module
level; :func:`load_kernels` imports it on the op's first Triton call (after :func:`require_triton` has checked that
``triton`` imports), so ``import afnext_kernels`` and the PyTorch references work where Triton is not installed.
``triton.jit`` decides at decoration time whether a kernel is compiled or interpreted (it reads
``TRITON_INTERPRET`` then), and ``triton.language``'s own ``@jit`` helpers (``tl.sum``, ``tl.max``, ``tl.zeros``)
are decorated when ``triton`` is first imported: the interpreter works only when ``TRITON_INTERPRET=1`` was set
before *both*. Each kernel module records that in ``INTERPRETED`` (:func:`interpreter_active`) and
:func:`check_device` refuses CPU tensors, saying why, when it does not hold.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from afnext_kernels.errors import KernelUnavailableError

if TYPE_CHECKING:
    import torch

__all__ = [
    "AUTOTUNE_ENV",
    "TunableKernel",
    "autotune_enabled",
    "check_device",
    "interpreter_active",
    "interpreter_requested",
    "load_kernels",
    "require_triton",
]

AUTOTUNE_ENV = "AFNEXT_KERNELS_AUTOTUNE"
_TRUE = {"1", "true", "on", "yes"}


def interpreter_requested() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for the interpreter (read the way Triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


def triton_language_interpreted() -> bool:
    """Whether ``triton.language``'s ``@jit`` helpers were built for the interpreter (decided at ``import triton``)."""
    import triton.language as tl

    return type(getattr(tl, "sum", None)).__name__ == "InterpretedFunction"


def interpreter_active() -> bool:
    """Whether kernels decorated now run under the interpreter: requested now, and when triton was imported."""
    return interpreter_requested() and triton_language_interpreted()


def autotune_enabled() -> bool:
    """Autotune on GPU unless ``AFNEXT_KERNELS_AUTOTUNE=0`` (tests do this to compile one config per shape)."""
    return os.environ.get(AUTOTUNE_ENV, "1").strip().lower() in _TRUE


def require_triton() -> ModuleType:
    """Import ``triton`` or raise an actionable error.

    Returns:
        The ``triton`` module.

    Raises:
        KernelUnavailableError: Triton is not installed or does not import.
    """
    try:
        import triton
    except ImportError as err:
        raise KernelUnavailableError(
            f"impl='triton' needs the triton package, which does not import here ({err}). "
            "Install it with `pip install triton` (or `pip install afnext[triton]`), "
            "or choose impl='reference' / AFNEXT_KERNELS_IMPL=reference."
        ) from err
    return triton


def load_kernels(op: str) -> ModuleType:
    """Import the Triton module of an op, ``afnext_kernels.ops.<op>``, after checking that Triton imports.

    Args:
        op: Module name under ``afnext_kernels/ops/`` (``"flash_attn_varlen"``, ``"linear_cross_entropy"``,
            ``"rote"``, ``"flash_attn_varlen_bwd"``).

    Returns:
        The imported module.

    Raises:
        KernelUnavailableError: Triton is not installed or does not import.
    """
    require_triton()
    return importlib.import_module(f"afnext_kernels.ops.{op}")


def check_device(op: str, tensor: torch.Tensor, kernels: ModuleType) -> None:
    """Refuse tensors the loaded kernels cannot run on, saying what to do.

    Args:
        op: Public name of the op, for the message.
        tensor: A representative input.
        kernels: The kernel module, whose ``INTERPRETED`` flag records how its kernels were built.

    Raises:
        KernelUnavailableError: CPU tensor without the interpreter, or a device Triton does not target.
    """
    if tensor.device.type == "cuda":
        return
    if tensor.device.type != "cpu":
        raise KernelUnavailableError(
            f"{op}: impl='triton' runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), "
            f"got a {tensor.device.type} tensor; use impl='reference'."
        )
    if not kernels.INTERPRETED:
        if not interpreter_requested():
            when = "it is not set"
        elif not triton_language_interpreted():
            when = "it was set only after `triton` had been imported in this process"
        else:
            when = "it was set only after the kernels were first loaded in this process"
        raise KernelUnavailableError(
            f"{op}: impl='triton' on a CPU tensor runs only under the Triton interpreter, and "
            f"TRITON_INTERPRET=1 is not in effect ({when}). Export TRITON_INTERPRET=1 before starting "
            "Python (float32, small shapes, slow), move the tensors to CUDA, or use impl='reference'."
        )


class TunableKernel:
    """A ``@triton.jit`` kernel with an autotuned twin and a fixed configuration for when tuning is off.

    Autotuning benchmarks configurations on the GPU, which the interpreter cannot do, and each configuration
    costs a compilation; so the fixed configuration is used under the interpreter and when
    ``AFNEXT_KERNELS_AUTOTUNE=0``.

    Args:
        kernel: The jitted kernel.
        configs: ``triton.Config`` candidates for the autotuner.
        key: Argument names whose values select a tuning result (dtypes of tensor arguments are added by Triton).
        interpreted: Whether the kernel module was built for the interpreter.
    """

    def __init__(
        self, kernel: Any, configs: Sequence[Any], key: Sequence[str], interpreted: bool
    ) -> None:
        import triton

        self.kernel = kernel
        # The kernel object says how it was built (it can differ from the flag when TRITON_INTERPRET changed).
        self.interpreted = interpreted or type(kernel).__name__ == "InterpretedFunction"
        self.tuned = (
            None
            if self.interpreted
            else triton.autotune(configs=list(configs), key=list(key))(kernel)
        )

    def __call__(
        self,
        grid: Callable[[dict[str, Any]], tuple[int, ...]],
        fixed: Any,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """Launch with the autotuner, or with ``fixed`` (a ``triton.Config``) when tuning is off."""
        if self.tuned is not None and autotune_enabled():
            self.tuned[grid](*args, **kwargs)
            return
        meta = dict(fixed.kwargs)
        launch = (
            {}
            if self.interpreted
            else {"num_warps": fixed.num_warps, "num_stages": fixed.num_stages}
        )
        self.kernel[grid(meta)](*args, **kwargs, **meta, **launch)
