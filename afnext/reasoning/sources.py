"""Where timelines (and their audio) come from: synthetic scenes, or real audio with annotation files.

A source lists item ids up front (so splits and shards are fixed before anything is rendered) and loads
one item at a time. Built-in sources: :class:`SyntheticSource` (``conf/reasoning/source/synthetic.yaml``)
and :class:`AnnotatedSource` (``conf/reasoning/source/annotated.yaml``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from afnext.errors import ConfigError, DataError, FormatError
from afnext.reasoning.readers import read_event_tsv, read_rttm, read_transcript
from afnext.reasoning.scenes import (
    DEFAULT_PHRASES,
    DEFAULT_SPEAKERS,
    SceneSynthesizer,
    espeak_available,
)
from afnext.reasoning.timeline import Timeline

__all__ = ["AnnotatedSource", "Source", "SourceItem", "SyntheticSource"]


@dataclass(frozen=True)
class SourceItem:
    """One audio file and its timeline.

    Exactly one of ``audio_path`` (an existing file to copy or link) and ``synthesize`` (a function that
    renders 16 kHz mono samples) is set.

    Attributes:
        id: Unique id; also the audio's file name in the built dataset.
        timeline: The ground truth; its ``duration`` is the audio's length.
        audio_path: An existing audio file.
        synthesize: Renders the audio, float32 samples at 16 kHz.
    """

    id: str
    timeline: Timeline
    audio_path: Path | None = None
    synthesize: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.audio_path is None) == (self.synthesize is None):
            raise DataError(
                f"source item {self.id!r}: give exactly one of audio_path and synthesize"
            )
        if self.timeline.duration is None:
            raise DataError(f"source item {self.id!r}: its timeline has no duration")


@runtime_checkable
class Source(Protocol):
    """What the dataset builder needs from a source."""

    def ids(self) -> Sequence[str]:
        """Every item id, in a fixed order."""
        ...

    def load(self, item_id: str) -> SourceItem:
        """The item with this id."""
        ...

    def report(self) -> dict[str, Any]:
        """What the source did that the summary should show (skips, disabled features)."""
        ...


@dataclass
class SyntheticSource:
    """``num_scenes`` seeded synthetic scenes (see :mod:`afnext.reasoning.scenes`).

    Scene ``i`` is drawn from seed ``[seed, i]``, so any scene can be made alone (resuming, sharding).

    Args:
        num_scenes: How many scenes.
        seed: Base seed.
        speech: ``"on"`` (spoken phrases; error without espeak-ng), ``"off"``, or ``"auto"`` (on when
            espeak-ng is installed; otherwise off, with a warning, and the summary says so).
        Other arguments: as :class:`~afnext.reasoning.scenes.SceneSynthesizer`.
    """

    num_scenes: int = 100
    seed: int = 0
    min_duration: float = 4.0
    max_duration: float = 10.0
    min_events: int = 2
    max_events: int = 4
    event_types: Sequence[str] = ("low_tone", "high_tone", "rising_chirp", "noise_burst", "melody")
    speech: str = "auto"
    speakers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SPEAKERS))
    phrases: Sequence[str] = DEFAULT_PHRASES
    snr_db: Sequence[float] = (10.0, 25.0)
    overlap_prob: float = 0.0
    min_gap: float = 0.25
    background: str = "white"
    _notes: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_scenes < 1:
            raise ConfigError(f"source.num_scenes must be >= 1, got {self.num_scenes}")
        if self.speech not in ("on", "off", "auto"):
            raise ConfigError(f"source.speech must be on, off or auto, got {self.speech!r}")
        use_speech = self.speech == "on" or (self.speech == "auto" and espeak_available())
        if self.speech == "on" and not espeak_available():
            raise ConfigError(
                "source.speech=on needs the espeak-ng program, which is not installed: install it "
                "(apt-get install espeak-ng) or set source.speech=off"
            )
        if self.speech == "auto" and not use_speech:
            note = "off: espeak-ng is not installed (apt-get install espeak-ng for spoken phrases)"
            warnings.warn(f"synthetic scenes without speech: {note}", stacklevel=2)
            self._notes["speech"] = note
        else:
            self._notes["speech"] = "on" if use_speech else "off"
        self.synthesizer = SceneSynthesizer(
            min_duration=self.min_duration,
            max_duration=self.max_duration,
            min_events=self.min_events,
            max_events=self.max_events,
            event_types=tuple(self.event_types),
            speech=use_speech,
            speakers=dict(self.speakers),
            phrases=tuple(self.phrases),
            snr_db=tuple(self.snr_db),
            overlap_prob=self.overlap_prob,
            min_gap=self.min_gap,
            background=self.background,
        )

    def ids(self) -> list[str]:
        return [f"scene_{i:06d}" for i in range(self.num_scenes)]

    def load(self, item_id: str) -> SourceItem:
        index = int(item_id.rsplit("_", 1)[1])
        scene = self.synthesizer.plan([self.seed, index], name=item_id)
        return SourceItem(item_id, scene.timeline, synthesize=scene.render)

    def report(self) -> dict[str, Any]:
        return {"kind": "synthetic", "scenes": self.num_scenes, **self._notes}


_AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")


@dataclass
class AnnotatedSource:
    """Real audio files with annotations in common formats, matched to the audio by file stem.

    Args:
        audio_dir: Folder searched (recursively) for audio files.
        events_tsv: Strong sound-event labels, DESED / AudioSet-strong TSV (filename, onset, offset, label).
        transcripts_dir: Transcripts named ``<audio stem>.json`` (Whisper), ``.srt`` or ``.vtt``.
        rttm: Speaker turns; assigned to transcript segments, or used as speech turns without transcripts.
        label_map: Renaming of TSV labels (AudioSet MIDs to names).
        require_annotation: Audio without any annotation is an error (True) or skipped and counted (False).
    """

    audio_dir: str
    events_tsv: str | None = None
    transcripts_dir: str | None = None
    rttm: str | None = None
    label_map: Mapping[str, str] | None = None
    require_annotation: bool = False

    def __post_init__(self) -> None:
        root = Path(self.audio_dir)
        if not root.is_dir():
            raise ConfigError(f"source.audio_dir {self.audio_dir!r} is not a folder")
        if not (self.events_tsv or self.transcripts_dir or self.rttm):
            raise ConfigError(
                "source: give at least one of events_tsv, transcripts_dir and rttm for the audio"
            )
        self._audio = {}
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in _AUDIO_SUFFIXES:
                if path.stem in self._audio:
                    raise DataError(
                        f"{path}: two audio files share the stem {path.stem!r}; rename one"
                    )
                self._audio[path.stem] = path
        self._events = (
            read_event_tsv(self.events_tsv, label_map=self.label_map) if self.events_tsv else {}
        )
        self._turns = read_rttm(self.rttm) if self.rttm else {}
        self._transcripts = {}
        if self.transcripts_dir:
            for path in sorted(Path(self.transcripts_dir).iterdir()):
                if path.suffix.lower() in (".json", ".srt", ".vtt"):
                    self._transcripts[path.stem] = path
        annotated = set(self._events) | set(self._turns) | set(self._transcripts)
        self._ids = sorted(stem for stem in self._audio if stem in annotated)
        self._unannotated = sorted(set(self._audio) - annotated)
        self._missing_audio = sorted(annotated - set(self._audio))
        if self.require_annotation and self._unannotated:
            raise DataError(
                f"{len(self._unannotated)} audio files have no annotation (first: "
                f"{self._audio[self._unannotated[0]]}); annotate them or set source.require_annotation=false"
            )
        if not self._ids:
            raise DataError(
                f"no audio file in {self.audio_dir} matches an annotation by file stem "
                f"(annotations name e.g. {self._missing_audio[:3]})"
            )

    def ids(self) -> list[str]:
        return list(self._ids)

    def load(self, item_id: str) -> SourceItem:
        import soundfile as sf

        path = self._audio[item_id]
        try:
            duration = sf.info(str(path)).duration
        except RuntimeError as exc:
            raise DataError(f"{path}: cannot read the audio header: {exc}") from exc
        parts = []
        if item_id in self._events:
            parts.append(self._events[item_id])
        if item_id in self._transcripts:
            transcript = read_transcript(self._transcripts[item_id])
            if item_id in self._turns:
                transcript = transcript.assign_speakers(self._turns[item_id].events)
            parts.append(transcript)
        elif item_id in self._turns:
            parts.append(self._turns[item_id])
        timeline = parts[0]
        for part in parts[1:]:
            timeline = timeline.merge(part)
        try:
            timeline = timeline.with_duration(duration)
        except FormatError as exc:  # the annotation runs past the audio: name both files
            raise DataError(f"{path}: annotation does not fit the audio: {exc}") from exc
        return SourceItem(item_id, timeline, audio_path=path)

    def report(self) -> dict[str, Any]:
        return {
            "kind": "annotated",
            "items": len(self._ids),
            "audio_without_annotation": len(self._unannotated),
            "annotations_without_audio": len(self._missing_audio),
        }
