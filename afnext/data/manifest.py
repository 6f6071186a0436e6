"""Read AF3-style manifests: JSONL (one object per line) or a ``.json`` file holding a list of objects.

A line looks like (Audio Flamingo 3 / LLaVA style, see ``docs/tacot.md``)::

    {"id": "scene_4-0", "sound": "audio/scene_4.flac", "duration": 12.3,
     "conversations": [{"from": "human", "value": "<sound>\\nWhat happens first?"},
                       {"from": "gpt", "value": "A dog barks."}]}

* ``sound``: one path or a list of paths, relative to the manifest's folder unless absolute; absent, null,
  ``""`` or ``[]`` for a text-only sample.
* ``conversations``: turns with ``from`` in ``human`` / ``gpt`` / ``system`` (``user`` / ``assistant`` are
  accepted too); the ``<sound>`` placeholders across all turns must match the number of sounds, in order.
* ``id`` (default ``<file name>:<line>``) and ``duration`` (seconds, all sounds together) are optional; every
  other key is kept in :attr:`ManifestRecord.extra` (answers, choices, timelines for evaluation).

Nothing here raises on a bad line: :func:`read_manifest` returns a :class:`ManifestProblem` for it (file,
line and reason) so a dataset can skip and count it or raise, as configured; :func:`load_manifest` is the
strict variant.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afnext.errors import DataError
from afnext.llms.tokenizer import AUDIO_TOKEN

__all__ = [
    "ROLE_OF",
    "ManifestEntry",
    "ManifestProblem",
    "ManifestRecord",
    "load_manifest",
    "parse_record",
    "read_manifest",
]

ROLE_OF: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
"""Manifest ``from`` values and the processor role each becomes."""

# Reason keys (the skip counters are keyed by these).
MALFORMED_JSON = "malformed_json"
BAD_RECORD = "bad_record"
PLACEHOLDER_MISMATCH = "placeholder_mismatch"


@dataclass(frozen=True)
class ManifestRecord:
    """One well-formed manifest sample.

    Attributes:
        id: The sample's ``id`` (default ``<file name>:<line>``).
        sounds: Absolute audio paths, in placeholder order (empty for text-only samples).
        messages: Processor messages ``{"role": "user" | "assistant" | "system", "content": str}``.
        duration: Seconds of all sounds together from the manifest's ``duration`` field, else None.
        source: The manifest file.
        line: 1-based line of the sample in ``source``.
        extra: Every other key of the line (answers, choices, timelines, ...).
    """

    id: str
    sounds: tuple[str, ...]
    messages: tuple[dict[str, str], ...]
    duration: float | None
    source: str
    line: int
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def where(self) -> str:
        """``file:line`` of the sample, for messages."""
        return f"{self.source}:{self.line}"


@dataclass(frozen=True)
class ManifestProblem:
    """A manifest line that cannot become a sample.

    Attributes:
        source: The manifest file.
        line: 1-based line of the problem.
        reason: Short key (``malformed_json``, ``bad_record``, ``placeholder_mismatch``).
        message: What is wrong and what to do.
    """

    source: str
    line: int
    reason: str
    message: str

    @property
    def where(self) -> str:
        """``file:line`` of the problem, for messages."""
        return f"{self.source}:{self.line}"


ManifestEntry = ManifestRecord | ManifestProblem
"""What :func:`read_manifest` yields per sample: a record, or the problem that stopped it being one."""


def _resolve(sound: str, root: Path) -> str:
    path = Path(os.path.expanduser(sound))
    return str(path if path.is_absolute() else root / path)


def parse_record(obj: Any, *, source: str | Path, line: int) -> ManifestEntry:
    """Check one decoded manifest object and turn it into a :class:`ManifestRecord`.

    Args:
        obj: The decoded JSON value of the line.
        source: The manifest file (relative ``sound`` paths resolve against its folder).
        line: 1-based line number of ``obj`` in ``source``.

    Returns:
        The record, or a :class:`ManifestProblem` saying what is wrong.
    """
    source = str(source)

    def problem(reason: str, message: str) -> ManifestProblem:
        return ManifestProblem(source, line, reason, message)

    if not isinstance(obj, dict):
        return problem(BAD_RECORD, f"expected a JSON object, got {type(obj).__name__}")
    turns = obj.get("conversations")
    if not isinstance(turns, list) or not turns:
        return problem(
            BAD_RECORD,
            "missing or empty 'conversations'; give a list of {'from': 'human'|'gpt'|'system', "
            "'value': str} turns",
        )
    messages: list[dict[str, str]] = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return problem(BAD_RECORD, f"conversations[{k}] is not an object")
        who = turn.get("from")
        if who not in ROLE_OF:
            return problem(
                BAD_RECORD,
                f"conversations[{k}] has from={who!r}; use 'human', 'gpt' or 'system'",
            )
        value = turn.get("value")
        if not isinstance(value, str):
            return problem(BAD_RECORD, f"conversations[{k}] needs a string 'value'")
        messages.append({"role": ROLE_OF[who], "content": value})

    sound = obj.get("sound")
    if sound is None or sound == "":
        sounds: list[Any] = []
    elif isinstance(sound, str):
        sounds = [sound]
    elif isinstance(sound, list) and all(isinstance(s, str) and s for s in sound):
        sounds = sound
    else:
        return problem(BAD_RECORD, "'sound' must be a path or a list of paths")
    n_slots = sum(m["content"].count(AUDIO_TOKEN) for m in messages)
    if n_slots != len(sounds):
        return problem(
            PLACEHOLDER_MISMATCH,
            f"the conversation has {n_slots} {AUDIO_TOKEN} placeholders but 'sound' names "
            f"{len(sounds)} files; put one {AUDIO_TOKEN} per file in the human turn",
        )

    duration = obj.get("duration")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0:
            return problem(
                BAD_RECORD, f"'duration' must be a number of seconds >= 0, got {duration!r}"
            )
        duration = float(duration)
    root = Path(source).parent
    extra = {k: v for k, v in obj.items() if k not in ("id", "sound", "conversations", "duration")}
    return ManifestRecord(
        id=str(obj.get("id", f"{Path(source).name}:{line}")),
        sounds=tuple(_resolve(s, root) for s in sounds),
        messages=tuple(messages),
        duration=duration,
        source=source,
        line=line,
        extra=extra,
    )


def _read_jsonl(text: str, source: str) -> list[ManifestEntry]:
    entries: list[ManifestEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            entries.append(
                ManifestProblem(
                    source,
                    number,
                    MALFORMED_JSON,
                    f"not valid JSON ({exc.msg} at column {exc.colno}); fix or delete the line",
                )
            )
            continue
        entries.append(parse_record(obj, source=source, line=number))
    return entries


def _read_json_list(text: str, source: str) -> list[ManifestEntry]:
    """Items of a top-level JSON list, each with the line it starts on (decoded one by one)."""
    decoder = json.JSONDecoder()
    entries: list[ManifestEntry] = []

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def skip_ws(pos: int) -> int:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        return pos

    pos = skip_ws(0)
    if not text.startswith("[", pos):
        return [
            ManifestProblem(
                source,
                line_of(pos),
                MALFORMED_JSON,
                "a .json manifest must hold a list of samples; use .jsonl for one object per line",
            )
        ]
    pos = skip_ws(pos + 1)
    if text.startswith("]", pos):
        return entries
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            entries.append(
                ManifestProblem(
                    source,
                    exc.lineno,
                    MALFORMED_JSON,
                    f"not valid JSON ({exc.msg} at column {exc.colno}); the rest of the file is not "
                    "read, fix the file",
                )
            )
            return entries
        entries.append(parse_record(obj, source=source, line=line_of(pos)))
        pos = skip_ws(end)
        if text.startswith(",", pos):
            pos = skip_ws(pos + 1)
        elif text.startswith("]", pos):
            return entries
        else:
            entries.append(
                ManifestProblem(
                    source,
                    line_of(pos),
                    MALFORMED_JSON,
                    "expected ',' or ']' between samples; the rest of the file is not read, fix the file",
                )
            )
            return entries


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Every sample of a manifest, in file order, as a record or a problem.

    Args:
        path: A ``.jsonl`` file (one JSON object per line; blank lines are ignored) or a ``.json`` file
            holding a list of objects.

    Returns:
        One :class:`ManifestRecord` or :class:`ManifestProblem` per sample (per line for JSONL).

    Raises:
        DataError: The manifest file itself cannot be read.
    """
    path = Path(path).absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{path}: no such manifest; check the data config's train/val/test paths"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{path}: cannot read the manifest ({exc}); it must be UTF-8 JSON/JSONL"
        ) from exc
    if path.suffix == ".json":
        return _read_json_list(text, str(path))
    return _read_jsonl(text, str(path))


def load_manifest(path: str | Path) -> list[ManifestRecord]:
    """The records of a manifest, raising on the first bad sample.

    Raises:
        DataError: Naming ``file:line`` and what is wrong.
    """
    records: list[ManifestRecord] = []
    for entry in read_manifest(path):
        if isinstance(entry, ManifestProblem):
            raise DataError(f"{entry.where}: {entry.message}")
        records.append(entry)
    return records
