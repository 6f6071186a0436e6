"""Errors raised by afnext_kernels: a family of their own, importable without afnext (or torch).

``afnext_kernels`` stands alone (a GPU host reached through a symlink, scripts outside the project), so nothing
here imports ``afnext``. The family's root, :class:`AfnextError`, is the root of the whole project's family and is
defined here, in the lowest layer, because ``afnext.errors`` re-exports it: ``except afnext.errors.AfnextError``
then catches every kernel error. Registering kernel errors as virtual subclasses of a root defined in afnext would
not do that: an ``except`` clause matches real subclasses only (CPython ignores ``ABCMeta.register`` there, while
``isinstance`` honours it).
"""

from __future__ import annotations

__all__ = [
    "AfnextError",
    "ConfigError",
    "InputError",
    "KernelConfigError",
    "KernelError",
    "KernelInputError",
    "KernelUnavailableError",
]


class AfnextError(Exception):
    """Root of every error the afnext project raises on purpose (``afnext.errors`` re-exports it)."""


class KernelError(AfnextError):
    """Base class of every error afnext_kernels raises on purpose; the message says what to do."""


class KernelConfigError(KernelError, ValueError):
    """A configuration value (an implementation name, ``AFNEXT_KERNELS_IMPL``) is not one the kernels accept."""


class KernelInputError(KernelError, ValueError):
    """Inputs of an op disagree with each other or with what the op accepts (the message names the argument)."""


class KernelUnavailableError(KernelError, RuntimeError):
    """A requested kernel implementation cannot run here (package missing, not loadable, wrong device).

    The message names the implementation, why it cannot run and what to do (install a package, set
    ``TRITON_INTERPRET=1``, or pick another ``impl``).
    """


# The names the kernels used before the family had a ``Kernel`` prefix (``afnext_kernels.errors.InputError``).
ConfigError = KernelConfigError
InputError = KernelInputError
