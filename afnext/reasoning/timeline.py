"""What happens when in one audio file: labelled events, transcript segments, captions.

One representation serves every source: a :class:`Timeline` is a duration plus :class:`Event` s sorted by
onset. An event's ``kind`` says what it is:

* ``sound`` / ``music``: a labelled sound event or music section (``label`` = the class);
* ``speech``: a transcript segment (``label = "speech"``, ``speaker`` and ``text`` where known, ``words``
  with their own times where the ASR gave them);
* ``caption``: a caption of a segment (``label = "caption"``, ``text`` = the caption);
* ``silence``: a stretch with no foreground sound (synthetic scenes).

The manifest writes a timeline as a list of ``{onset, offset, label, kind[, speaker][, text][, words]}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from afnext.errors import FormatError

__all__ = ["EVENT_KINDS", "Event", "Timeline", "Word"]

EVENT_KINDS = ("sound", "music", "speech", "caption", "silence")


@dataclass(frozen=True)
class Word:
    """A word with its own times (from ASR word timestamps or synthetic speech)."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Event:
    """One thing that happens between ``onset`` and ``offset`` (seconds).

    Attributes:
        onset: Start in seconds.
        offset: End in seconds (``>= onset``).
        label: The class (``"dog bark"``, ``"melody"``); ``"speech"`` / ``"caption"`` for those kinds.
        kind: One of :data:`EVENT_KINDS`.
        speaker: Who speaks (speech), if known.
        text: The words (speech) or the caption (caption).
        words: Word times within a speech segment.
    """

    onset: float
    offset: float
    label: str
    kind: str = "sound"
    speaker: str | None = None
    text: str | None = None
    words: tuple[Word, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise FormatError(f"event kind {self.kind!r} is not one of {EVENT_KINDS}")
        if not self.label:
            raise FormatError(f"event at {self.onset}-{self.offset} s has an empty label")
        if not (0 <= self.onset <= self.offset):
            raise FormatError(
                f"event {self.label!r} has onset {self.onset} and offset {self.offset}; "
                "need 0 <= onset <= offset"
            )

    @property
    def duration(self) -> float:
        return self.offset - self.onset

    def overlap(self, other: Event) -> float:
        """Seconds shared with ``other`` (negative: the gap between them)."""
        return min(self.offset, other.offset) - max(self.onset, other.onset)

    def to_dict(self) -> dict[str, Any]:
        """The manifest form: ``onset``, ``offset``, ``label``, ``kind`` and what applies of the rest."""
        out: dict[str, Any] = {
            "onset": round(self.onset, 3),
            "offset": round(self.offset, 3),
            "label": self.label,
            "kind": self.kind,
        }
        if self.speaker is not None:
            out["speaker"] = self.speaker
        if self.text is not None:
            out["text"] = self.text
        if self.words:
            out["words"] = [
                {"start": round(w.start, 3), "end": round(w.end, 3), "text": w.text}
                for w in self.words
            ]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "<event>") -> Event:
        """Inverse of :meth:`to_dict`.

        Raises:
            FormatError: A key is missing or has the wrong type; the message names ``where`` and the key.
        """
        try:
            words = tuple(
                Word(float(w["start"]), float(w["end"]), str(w["text"]))
                for w in data.get("words", ())
            )
            return cls(
                onset=float(data["onset"]),
                offset=float(data["offset"]),
                label=str(data["label"]),
                kind=str(data.get("kind", "sound")),
                speaker=None if data.get("speaker") is None else str(data["speaker"]),
                text=None if data.get("text") is None else str(data["text"]),
                words=words,
            )
        except KeyError as exc:
            raise FormatError(f"{where}: event is missing key {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise FormatError(f"{where}: bad event {dict(data)!r}: {exc}") from exc


@dataclass(frozen=True)
class Timeline:
    """Every annotated event of one audio file, sorted by onset.

    Attributes:
        events: The events, sorted by ``(onset, offset, label)``.
        duration: The audio's length in seconds, or ``None`` where the annotation does not say.
        source: Where the annotation came from (a file, ``synthetic:<seed>``), for messages.
        labels: The label vocabulary of the annotation scheme (for multiple-choice distractors); defaults to
            the labels present.
        speakers: The speaker vocabulary, likewise.
    """

    events: tuple[Event, ...]
    duration: float | None = None
    source: str = "<timeline>"
    labels: tuple[str, ...] = field(default=())
    speakers: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        events = tuple(sorted(self.events, key=lambda e: (e.onset, e.offset, e.label)))
        object.__setattr__(self, "events", events)
        present = [e.label for e in events if e.kind in ("sound", "music", "speech")]
        object.__setattr__(self, "labels", tuple(sorted(set(self.labels) | set(present))))
        spoken = [e.speaker for e in events if e.speaker is not None]
        object.__setattr__(self, "speakers", tuple(sorted(set(self.speakers) | set(spoken))))
        if self.duration is not None:
            late = [e for e in events if e.offset > self.duration + 1e-6]
            if late:
                raise FormatError(
                    f"{self.source}: event {late[0].label!r} ends at {late[0].offset} s, past the "
                    f"audio's duration {self.duration} s"
                )

    def of_kind(self, *kinds: str) -> tuple[Event, ...]:
        """The events whose kind is one of ``kinds``."""
        return tuple(e for e in self.events if e.kind in kinds)

    def with_label(self, label: str) -> tuple[Event, ...]:
        """The events labelled ``label``, in onset order."""
        return tuple(e for e in self.events if e.label == label)

    def merge(self, other: Timeline) -> Timeline:
        """Both timelines' events in one (for example sound events plus a transcript)."""
        durations = [d for d in (self.duration, other.duration) if d is not None]
        return Timeline(
            events=self.events + other.events,
            duration=max(durations) if durations else None,
            source=f"{self.source} + {other.source}",
            labels=self.labels + other.labels,
            speakers=self.speakers + other.speakers,
        )

    def with_duration(self, duration: float) -> Timeline:
        """The same events for audio of ``duration`` seconds (checked: no event may end later)."""
        return replace(self, duration=duration)

    def assign_speakers(self, turns: Iterable[Event]) -> Timeline:
        """Give each speech segment without a speaker the speaker of the turn it overlaps most.

        Args:
            turns: Speaker turns (for example from an RTTM file), each with ``speaker`` set.
        """
        turns = [t for t in turns if t.speaker is not None]
        events = []
        for event in self.events:
            if event.kind == "speech" and event.speaker is None and turns:
                best = max(turns, key=event.overlap)
                if event.overlap(best) > 0:
                    event = replace(event, speaker=best.speaker)
            events.append(event)
        return replace(self, events=tuple(events))

    def to_list(self) -> list[dict[str, Any]]:
        """The manifest form: one dict per event."""
        return [e.to_dict() for e in self.events]

    @classmethod
    def from_list(
        cls,
        events: Iterable[Mapping[str, Any]],
        *,
        duration: float | None = None,
        source: str = "<list>",
    ) -> Timeline:
        """Inverse of :meth:`to_list`; ``source`` names the file in error messages."""
        return cls(
            events=tuple(Event.from_dict(e, where=f"{source}[{i}]") for i, e in enumerate(events)),
            duration=duration,
            source=source,
        )
