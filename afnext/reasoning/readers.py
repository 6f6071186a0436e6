"""Readers that turn common annotation formats into :class:`~afnext.reasoning.timeline.Timeline` s.

* Sound events: AudioSet-strong / DESED-style TSV (``filename, onset, offset, label``): :func:`read_event_tsv`.
* Transcripts: Whisper-style JSON (segments, optional word times; also the Hugging Face pipeline's
  ``chunks``): :func:`read_whisper_json`; SubRip: :func:`read_srt`; WebVTT: :func:`read_vtt`.
* Speakers: RTTM: :func:`read_rttm`.

Every error names the file and line and says what the line should look like.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from pathlib import Path

from afnext.errors import FormatError
from afnext.reasoning.timeline import Event, Timeline, Word

__all__ = [
    "read_event_tsv",
    "read_rttm",
    "read_srt",
    "read_transcript",
    "read_vtt",
    "read_whisper_json",
]

# Header names each TSV column may carry (DESED first, AudioSet-strong second).
_FILE_COLUMNS = ("filename", "segment_id", "file", "audio", "audio_id")
_ONSET_COLUMNS = ("onset", "start_time_seconds", "start", "begin")
_OFFSET_COLUMNS = ("offset", "end_time_seconds", "end", "stop")
_LABEL_COLUMNS = ("event_label", "label", "event", "class")


def _float(value: str, path: Path, line: int, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise FormatError(f"{path}:{line}: {name} {value!r} is not a number of seconds") from None
    if number != number or number < 0:  # NaN or negative
        raise FormatError(
            f"{path}:{line}: {name} {value!r} must be a non-negative number of seconds"
        )
    return number


def _column(header: list[str], names: tuple[str, ...], path: Path) -> int:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    raise FormatError(
        f"{path}:1: header {header} has no column among {list(names)}; expected a DESED header "
        "'filename onset offset event_label' or AudioSet-strong 'segment_id start_time_seconds "
        "end_time_seconds label'"
    )


def read_event_tsv(
    path: str | Path, *, label_map: Mapping[str, str] | None = None
) -> dict[str, Timeline]:
    """Read strong sound-event labels: one ``filename, onset, offset, label`` row per event.

    A header row (DESED ``filename onset offset event_label`` or AudioSet-strong ``segment_id
    start_time_seconds end_time_seconds label``) is recognised; without one the four columns are taken
    in that order. A row with only a filename (DESED's files without events) gives an empty timeline.

    Args:
        path: The TSV file.
        label_map: Optional renaming of labels (AudioSet MIDs such as ``/m/05zppz`` to names).

    Returns:
        ``{file stem: timeline}``; each timeline's ``labels`` holds every label in the file (the
        vocabulary multiple-choice distractors are drawn from). Durations are unknown (``None``).

    Raises:
        FormatError: A row has the wrong number of columns, a bad number, or offset < onset.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [(n, row) for n, row in enumerate(csv.reader(handle, delimiter="\t"), 1) if row]
    if not rows:
        raise FormatError(
            f"{path}: the TSV file is empty; expected 'filename onset offset label' rows"
        )
    first = rows[0][1]
    columns = (0, 1, 2, 3)
    if not _looks_numeric(first[1] if len(first) > 1 else ""):
        columns = tuple(
            _column(first, names, path)
            for names in (_FILE_COLUMNS, _ONSET_COLUMNS, _OFFSET_COLUMNS, _LABEL_COLUMNS)
        )
        rows = rows[1:]
    events: dict[str, list[Event]] = {}
    for number, row in rows:
        if len(row) == 1 or all(not row[c].strip() for c in columns[1:] if c < len(row)):
            events.setdefault(Path(row[columns[0]].strip()).stem, [])
            continue
        if len(row) <= max(columns):
            raise FormatError(
                f"{path}:{number}: row {row} has {len(row)} columns; expected 4 tab-separated "
                "columns 'filename onset offset label' (is the file comma- or space-separated?)"
            )
        name, onset, offset, label = (row[c].strip() for c in columns)
        start = _float(onset, path, number, "onset")
        end = _float(offset, path, number, "offset")
        if end < start:
            raise FormatError(f"{path}:{number}: offset {end} is before onset {start}; swap them")
        if not label:
            raise FormatError(f"{path}:{number}: the label column is empty")
        label = label_map.get(label, label) if label_map else label
        events.setdefault(Path(name).stem, []).append(Event(start, end, label, kind="sound"))
    vocabulary = tuple(sorted({e.label for evs in events.values() for e in evs}))
    return {
        stem: Timeline(tuple(evs), source=f"{path}", labels=vocabulary)
        for stem, evs in events.items()
    }


def _looks_numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def read_whisper_json(path: str | Path, *, duration: float | None = None) -> Timeline:
    """Read ASR output with timestamps: Whisper / faster-whisper / WhisperX ``segments`` (with optional
    ``words`` and ``speaker``) or the Hugging Face ASR pipeline's ``chunks`` (``timestamp: [start, end]``).

    Raises:
        FormatError: The JSON is invalid, or a segment lacks its times; names the file and segment.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict) or not ("segments" in data or "chunks" in data):
        raise FormatError(
            f"{path}: expected a JSON object with 'segments' (Whisper) or 'chunks' (Hugging Face "
            "pipeline with return_timestamps)"
        )
    events = []
    if "segments" in data:
        for i, seg in enumerate(data["segments"]):
            where = f"{path}: segments[{i}]"
            start, end = _times(seg, "start", "end", where)
            words = tuple(
                Word(
                    *_times(w, "start", "end", f"{where}.words[{j}]"),
                    str(w.get("word", "")).strip(),
                )
                for j, w in enumerate(seg.get("words") or [])
                if w.get("start") is not None  # WhisperX leaves numbers and symbols untimed
            )
            speaker = seg.get("speaker")
            events.append(_speech(start, end, str(seg.get("text", "")), speaker, words, where))
    else:
        for i, chunk in enumerate(data["chunks"]):
            where = f"{path}: chunks[{i}]"
            stamp = chunk.get("timestamp")
            if not isinstance(stamp, list | tuple) or len(stamp) != 2 or stamp[0] is None:
                raise FormatError(f"{where}: 'timestamp' must be [start, end], got {stamp!r}")
            start = float(stamp[0])
            # The pipeline leaves the last chunk's end as null when the audio ends mid-word.
            end = float(stamp[1]) if stamp[1] is not None else (duration or start)
            events.append(_speech(start, end, str(chunk.get("text", "")), None, (), where))
    return Timeline(tuple(events), duration=duration, source=str(path))


def _times(item: Mapping, start_key: str, end_key: str, where: str) -> tuple[float, float]:
    try:
        start, end = float(item[start_key]), float(item[end_key])
    except (KeyError, TypeError, ValueError):
        raise FormatError(
            f"{where}: needs numeric {start_key!r} and {end_key!r} seconds, got {dict(item)!r}"
        ) from None
    if end < start or start < 0:
        raise FormatError(f"{where}: {end_key} {end} is before {start_key} {start} (or negative)")
    return start, end


def _speech(
    start: float,
    end: float,
    text: str,
    speaker: str | None,
    words: tuple[Word, ...],
    where: str,
) -> Event:
    """A transcript segment as a speech event (text with its whitespace collapsed)."""
    if end < start:
        raise FormatError(f"{where}: ends at {end} before it starts at {start}")
    return Event(
        start,
        end,
        "speech",
        kind="speech",
        speaker=speaker,
        text=" ".join(text.split()),
        words=words,
    )


_SRT_TIME = r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_SRT_TIMING_RE = re.compile(rf"\s*{_SRT_TIME}\s*-->\s*{_SRT_TIME}(?:\s.*)?")
_VTT_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})\.(\d{3})"
_VTT_TIMING_RE = re.compile(rf"\s*{_VTT_TIME}\s*-->\s*{_VTT_TIME}(?:\s.*)?")
_VTT_INLINE_RE = re.compile(rf"<{_VTT_TIME}>")
_VOICE_RE = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]+)>")
_TAG_RE = re.compile(r"</?[^>]*>")
_SPEAKER_PREFIX_RE = re.compile(r"^\[([^\]]+)\]:?\s*")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    """Blank-line separated blocks with the 1-based line number of their first line."""
    blocks, current, start = [], [], 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            if not current:
                start = number
            current.append(line.rstrip())
        elif current:
            blocks.append((start, current))
            current = []
    if current:
        blocks.append((start, current))
    return blocks


def read_srt(path: str | Path, *, duration: float | None = None) -> Timeline:
    """Read SubRip subtitles: blocks of an index, ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` and text lines.

    A leading ``[Speaker]`` or ``[Speaker]:`` in the text (as diarizing ASR tools write) becomes the
    segment's speaker; formatting tags (``<i>``) are dropped.

    Raises:
        FormatError: A block has no timing line or the timing is malformed; names the file and line.
    """
    path = Path(path)
    events = []
    for start_line, lines in _blocks(path.read_text(encoding="utf-8-sig")):
        body = lines[1:] if lines[0].strip().isdigit() else lines
        timing_line = start_line + (len(lines) - len(body))
        match = _SRT_TIMING_RE.fullmatch(body[0]) if body else None
        if not match:
            raise FormatError(
                f"{path}:{timing_line}: expected a timing line like '00:00:01,000 --> 00:00:04,500', "
                f"got {body[0] if body else '(nothing)'!r}"
            )
        g = match.groups()
        start, end = _seconds(*g[:4]), _seconds(*g[4:])
        text = _TAG_RE.sub("", " ".join(body[1:]))
        speaker = None
        prefix = _SPEAKER_PREFIX_RE.match(text)
        if prefix:
            speaker, text = prefix.group(1).strip(), text[prefix.end() :]
        where = f"{path}:{timing_line}"
        events.append(_speech(start, end, text, speaker, (), where))
    return Timeline(tuple(events), duration=duration, source=str(path))


def read_vtt(path: str | Path, *, duration: float | None = None) -> Timeline:
    """Read WebVTT subtitles: ``WEBVTT`` header, cues ``[MM:]SS.mmm --> ...`` with payload lines.

    ``<v Speaker>`` voice tags give the speaker; inline timestamps (``<00:00:01.500>``, as in
    word-timed captions) give word times; ``NOTE``, ``STYLE`` and ``REGION`` blocks are skipped.

    Raises:
        FormatError: The header is missing, or a cue's timing is malformed; names the file and line.
    """
    path = Path(path)
    blocks = _blocks(path.read_text(encoding="utf-8-sig"))
    if not blocks or not blocks[0][1][0].startswith("WEBVTT"):
        raise FormatError(f"{path}:1: a WebVTT file must start with 'WEBVTT'")
    events = []
    for start_line, lines in blocks[1:]:
        if lines[0].split(" ")[0] in ("NOTE", "STYLE", "REGION"):
            continue
        timing = 0 if "-->" in lines[0] else 1  # an optional cue identifier comes first
        match = _VTT_TIMING_RE.fullmatch(lines[timing]) if timing < len(lines) else None
        if not match:
            raise FormatError(
                f"{path}:{start_line + timing}: expected a cue timing like '00:01.000 --> 00:04.500', "
                f"got {lines[timing] if timing < len(lines) else '(nothing)'!r}"
            )
        g = match.groups()
        start, end = _seconds(*g[:4]), _seconds(*g[4:])
        payload = " ".join(lines[timing + 1 :])
        voice = _VOICE_RE.search(payload)
        words = _inline_words(payload, start, end)
        text = _TAG_RE.sub("", payload)
        where = f"{path}:{start_line + timing}"
        speaker = voice.group(1).strip() if voice else None
        events.append(_speech(start, end, text, speaker, words, where))
    return Timeline(tuple(events), duration=duration, source=str(path))


def _inline_words(payload: str, start: float, end: float) -> tuple[Word, ...]:
    """Words timed by inline ``<hh:mm:ss.mmm>`` stamps: each word runs to the next stamp."""
    stamps = list(_VTT_INLINE_RE.finditer(payload))
    if not stamps:
        return ()
    pieces = []  # (time the piece starts, its text)
    cursor, at = 0, start
    for stamp in stamps:
        pieces.append((at, payload[cursor : stamp.start()]))
        cursor, at = stamp.end(), _seconds(*stamp.groups())
    pieces.append((at, payload[cursor:]))
    words = []
    for i, (at, raw) in enumerate(pieces):
        text = " ".join(_TAG_RE.sub("", raw).split())
        if text:
            until = pieces[i + 1][0] if i + 1 < len(pieces) else end
            words.append(Word(at, max(at, until), text))
    return tuple(words)


def read_rttm(path: str | Path) -> dict[str, Timeline]:
    """Read speaker turns from RTTM: ``SPEAKER file chan onset dur <NA> <NA> speaker <NA> <NA>``.

    Lines of other types (``SPKR-INFO``, ``LEXEME``, ...) and ``;;`` comments are skipped; they carry no
    speaker turns.

    Returns:
        ``{file id: timeline of speech turns}``, each turn an event with ``kind="speech"`` and ``speaker``.

    Raises:
        FormatError: A ``SPEAKER`` line has fewer than 8 fields or bad numbers; names the file and line.
    """
    path = Path(path)
    turns: dict[str, list[Event]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith(";;") or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise FormatError(
                f"{path}:{number}: a SPEAKER line needs at least 8 space-separated fields "
                f"'SPEAKER file chan onset duration <NA> <NA> speaker', got {len(fields)}: {line!r}"
            )
        onset = _float(fields[3], path, number, "onset")
        length = _float(fields[4], path, number, "duration")
        turns.setdefault(fields[1], []).append(
            Event(onset, onset + length, "speech", kind="speech", speaker=fields[7])
        )
    return {name: Timeline(tuple(evs), source=str(path)) for name, evs in turns.items()}


def read_transcript(path: str | Path, *, duration: float | None = None) -> Timeline:
    """Read a transcript by extension: ``.json`` (Whisper), ``.srt`` or ``.vtt``.

    Raises:
        FormatError: The extension is none of those.
    """
    path = Path(path)
    readers = {".json": read_whisper_json, ".srt": read_srt, ".vtt": read_vtt}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise FormatError(f"{path}: unknown transcript format; use .json (Whisper), .srt or .vtt")
    return reader(path, duration=duration)
