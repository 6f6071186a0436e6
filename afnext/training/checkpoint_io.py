"""Atomic checkpoint writes for Lightning: a killed save never leaves a half-written file.

Lightning's ``TorchCheckpointIO`` writes straight to the target path; if the process dies mid-write the
``last.ckpt`` a resume would read is truncated. Here the checkpoint goes to a temporary file in the same
folder, is flushed to disk, and replaces the target with ``os.replace`` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from afnext.errors import UsageError
from afnext.storage import atomic_torch_save

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose ``save_checkpoint`` is atomic (temporary file + ``os.replace``)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise UsageError(
                f"{type(self).__name__} does not take storage_options; got {storage_options!r}"
            )
        atomic_torch_save(checkpoint, path)
