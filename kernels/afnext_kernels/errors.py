"""Errors raised by afnext_kernels, members of afnext's one exception family (``afnext.errors``).

``afnext_kernels`` also runs where only ``kernels/`` is on the path (a GPU host reached through a symlink,
scripts outside the project): then the same classes are defined here, with the same bases.
"""

from __future__ import annotations

try:
    from afnext.errors import AfnextError, ConfigError, InputError
except ImportError:  # afnext itself is not importable: stand-alone kernels

    class AfnextError(Exception):  # type: ignore[no-redef]
        """Base class of every error afnext raises on purpose."""

    class ConfigError(AfnextError, ValueError):  # type: ignore[no-redef]
        """A configuration key (here: an implementation name) has a bad value."""

    class InputError(AfnextError, ValueError):  # type: ignore[no-redef]
        """Inputs disagree with each other or with what the op accepts."""


__all__ = ["AfnextError", "ConfigError", "InputError", "KernelUnavailableError"]


class KernelUnavailableError(AfnextError, RuntimeError):
    """A requested kernel implementation cannot run here (package missing, not loadable, wrong device).

    The message names the implementation, why it cannot run and what to do (install a package, set
    ``TRITON_INTERPRET=1``, or pick another ``impl``).
    """
