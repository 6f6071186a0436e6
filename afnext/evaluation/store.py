"""Predictions of an evaluation as JSON lines, appended as they finish, so a killed run resumes.

One folder per benchmark holds ``predictions.jsonl`` (rank 0 appends there; rank r > 0 appends to
``predictions.rank<r>.jsonl``), one line per answered sample, flushed at once::

    {"id": "...", "prediction": "text", "finish_reason": "stop", "prompt_tokens": 412, "completion_tokens": 9,
     "audio_seconds": 8.0}
    {"id": "...", "prediction": null, "error": "clip.wav: could not decode audio ..."}

On restart every ``predictions*.jsonl`` of the folder is read (a line cut off by a kill is dropped and the file
is cut back to its last whole line before anything is appended), samples with a prediction are skipped, and
duplicates (two ranks, or a sample answered again after an error) are resolved: the first line with a
prediction wins, else the last error. At the end :meth:`PredictionStore.compact` rewrites ``predictions.jsonl``
with one line per sample, in the benchmark's order, and removes the rank files. ``settings.json`` records what
produced the predictions; resuming with other settings is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from afnext.errors import ConfigError

__all__ = ["PREDICTIONS", "PredictionStore"]

PREDICTIONS = "predictions.jsonl"
SETTINGS = "settings.json"


class PredictionStore:
    """The predictions folder of one benchmark.

    Args:
        folder: ``<eval out_dir>/<benchmark name>``.
        rank: This process's global rank (picks the file it appends to).
    """

    def __init__(self, folder: str | Path, rank: int = 0) -> None:
        self.folder = Path(folder)
        self.rank = rank
        self._handle: Any = None

    @property
    def path(self) -> Path:
        """The file this rank appends to."""
        return self.folder / (
            PREDICTIONS if self.rank == 0 else f"predictions.rank{self.rank}.jsonl"
        )

    def files(self) -> list[Path]:
        """Every predictions file of the folder (the merged one first)."""
        return sorted(
            self.folder.glob("predictions*.jsonl"), key=lambda p: (p.name != PREDICTIONS, p.name)
        )

    # ----------------------------------------------------------------------------------------------
    # Settings
    # ----------------------------------------------------------------------------------------------
    def check_settings(
        self, settings: Mapping[str, Any], *, overwrite: bool, primary: bool
    ) -> None:
        """Record ``settings``; refuse to resume predictions made with other ones.

        Args:
            settings: What produces the predictions (checkpoint, generation settings, prompt, file).
            overwrite: Start over: remove earlier predictions (only the primary process removes files).
            primary: Whether this is the process that writes ``settings.json`` (global rank 0 before launch).

        Raises:
            ConfigError: Earlier predictions here came from other settings (names the keys that differ).
        """
        path = self.folder / SETTINGS
        wanted = json.loads(json.dumps(dict(settings)))  # as JSON would give it back
        if overwrite and primary:
            for file in self.files():
                file.unlink()
            path.unlink(missing_ok=True)
        if path.is_file() and self.files():
            recorded = json.loads(path.read_text())
            differ = sorted(
                k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k)
            )
            if differ:
                raise ConfigError(
                    f"{self.folder}: its predictions were made with other settings ({', '.join(differ)}: "
                    f"{ {k: recorded.get(k) for k in differ} } then, { {k: wanted.get(k) for k in differ} } "
                    "now); rerun with overwrite=true to start over, or give another run_name= / out_dir="
                )
        if primary:
            from afnext.storage import write_json

            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(path, wanted)

    # ----------------------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------------------
    def read(self) -> dict[str, dict[str, Any]]:
        """``{id: line}`` over every file, duplicates resolved (see the module docstring)."""
        lines: dict[str, dict[str, Any]] = {}
        for file in self.files():
            for record in _read_lines(file):
                ident = str(record.get("id"))
                known = lines.get(ident)
                if known is None or (
                    known.get("prediction") is None and record.get("prediction") is not None
                ):
                    lines[ident] = record
                elif known.get("prediction") is None:
                    lines[ident] = record  # a later error replaces an earlier one
        return lines

    def finished(self) -> set[str]:
        """Ids with a prediction (a sample with only an error is answered again)."""
        return {k for k, v in self.read().items() if v.get("prediction") is not None}

    # ----------------------------------------------------------------------------------------------
    # Writing
    # ----------------------------------------------------------------------------------------------
    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append lines and flush them (a kill after this loses none of them)."""
        if self._handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            _cut_partial_line(self.path)
            self._handle = self.path.open("a", encoding="utf-8")
        for record in records:
            self._handle.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Close this rank's file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def compact(self, order: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Rewrite ``predictions.jsonl`` with one line per sample (in ``order``, then any others) and remove the
        rank files; returns ``{id: line}``."""
        from afnext.storage import atomic_write_text

        self.close()
        lines = self.read()
        ranked = {ident: i for i, ident in enumerate(order)}
        ids = sorted(lines, key=lambda k: (ranked.get(k, len(ranked)), k))
        text = "".join(json.dumps(lines[k], ensure_ascii=False) + "\n" for k in ids)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.folder / PREDICTIONS, text)
        for file in self.files():
            if file.name != PREDICTIONS:
                file.unlink()
        return lines


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """JSON objects of a file; a line that is not one (cut off by a kill) is skipped."""
    records = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "id" in record:
                records.append(record)
    return records


def _cut_partial_line(path: Path) -> None:
    """Cut a file back to its last newline, so an append never continues a line cut off by a kill."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        data = handle.read()
        handle.truncate(data.rfind(b"\n") + 1)
