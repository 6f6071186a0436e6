"""The one exception family afnext raises on purpose.

Every message names what is at fault (a file, a manifest line, a config key, a tensor argument) and says
what to do about it. Catch :class:`AfnextError` to handle all of them, the kernels' included.

The root :class:`AfnextError` and the kernels' errors (:class:`KernelError` and its subclasses) are defined in
:mod:`afnext_kernels.errors` and re-exported here: ``afnext_kernels`` stands alone and cannot import afnext, and an
``except`` clause matches real subclasses only (``ABCMeta.register`` satisfies ``isinstance`` but not
``except``), so the root lives in the lower of the two packages. Importing that module costs no torch import.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from afnext_kernels.errors import (
    AfnextError,
    KernelConfigError,
    KernelError,
    KernelInputError,
    KernelUnavailableError,
)

__all__ = [
    "AfnextError",
    "AudioError",
    "AudioTooLongError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "FormatError",
    "InputError",
    "KernelConfigError",
    "KernelError",
    "KernelInputError",
    "KernelUnavailableError",
    "PluginError",
    "UsageError",
]


class ConfigError(AfnextError, ValueError):
    """A configuration key is missing, has a bad value, or two keys disagree."""


class AudioError(AfnextError, ValueError):
    """Audio could not be decoded, is empty or too short, holds non-finite samples, is too long, or has a sample
    rate that is not a positive whole number of Hz.

    Args:
        message: What is wrong (and what to do, when ``fix`` is not given).
        source: The file (or a short description of in-memory bytes) the audio came from.
        fix: What to do about it in a training or data job (kept apart so that a server can say its own).

    Attributes:
        problem: ``message`` alone (with the source: ``"<source>: <problem>"`` is what a caller may report).
    """

    def __init__(
        self, message: str, source: str | Path | None = None, fix: str | None = None
    ) -> None:
        self.source = None if source is None else str(source)
        self.problem, self.fix = message, fix
        text = f"{message} {fix}" if fix else message
        super().__init__(f"{self.source}: {text}" if self.source else text)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with its parts (a data-loader worker's error reaches the main process whole)."""
        return (type(self), (self.problem, self.source, self.fix), self.__dict__)


class AudioTooLongError(AudioError):
    """Audio longer than the limit in force.

    Attributes:
        seconds: The audio's length in seconds.
        max_seconds: The limit it exceeds.
    """

    def __init__(
        self,
        message: str,
        source: str | Path | None = None,
        fix: str | None = None,
        *,
        seconds: float = math.nan,
        max_seconds: float = math.nan,
    ) -> None:
        super().__init__(message, source, fix)
        self.seconds, self.max_seconds = seconds, max_seconds


class InputError(AfnextError, ValueError):
    """Model inputs disagree with each other (for example audio given without a ``<sound>`` slot)."""


class CheckpointError(AfnextError, RuntimeError):
    """A checkpoint folder is missing files, or its weights do not match the model they are loaded into."""


class DataError(AfnextError, ValueError):
    """A manifest or dataset sample is malformed; the message names the file and line."""


class FormatError(AfnextError, ValueError):
    """Text in a structured format (TACoT, timelines, subtitles, RTTM, ...) could not be parsed."""


class PluginError(AfnextError, ImportError):
    """A third-party plugin declared through the ``afnext.plugins`` entry point failed to load."""


class UsageError(AfnextError, TypeError):
    """A function was called with an argument of a kind it does not take (for example a number as a path)."""
