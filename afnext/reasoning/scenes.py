"""Synthetic audio scenes with a ground-truth timeline, seeded and reproducible.

A scene is a background (white noise, or silence) with foreground events placed one after another:
tones of several pitches, chirps, noise bursts, click trains, music-like note sequences, silences, and
spoken phrases (through ``espeak-ng``, word-timed). Each foreground event is mixed at its own SNR
against the background. :meth:`SceneSynthesizer.plan` draws the timeline (cheap; no audio) and
:meth:`Scene.render` renders the waveform, so a builder can write the manifest without re-rendering.
Scenes run from a few seconds to 30 minutes.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from afnext.audio.resample import resample
from afnext.errors import ConfigError, DataError
from afnext.reasoning.timeline import Event, Timeline, Word

__all__ = [
    "DEFAULT_PHRASES",
    "DEFAULT_SPEAKERS",
    "EVENT_TYPES",
    "SAMPLE_RATE",
    "EventType",
    "Scene",
    "SceneSynthesizer",
    "espeak_available",
]

SAMPLE_RATE = 16_000
_REFERENCE_RMS = 0.005  # background level; an event at SNR s dB has RMS _REFERENCE_RMS * 10**(s/20)
_FADE_S = 0.01  # raised-cosine fade so event edges do not click
# Event times fall on a 10 ms grid, so the centisecond spans that chains cite are the events' exact times.
_TICK = SAMPLE_RATE // 100


def _ticks(samples: float) -> int:
    """``samples`` rounded down to the 10 ms grid."""
    return int(samples) // _TICK * _TICK


@dataclass(frozen=True)
class EventType:
    """A kind of synthetic foreground event.

    Attributes:
        label: The timeline label (what questions call it).
        kind: The timeline kind (``sound``, ``music``, ``silence``).
        min_duration: Shortest duration in seconds.
        max_duration: Longest duration in seconds.
    """

    label: str
    kind: str
    min_duration: float
    max_duration: float


# The catalogue `event_types` picks from. Pitches are far apart so the classes are easy to tell apart.
EVENT_TYPES: dict[str, EventType] = {
    "low_tone": EventType("low tone", "sound", 0.4, 1.2),
    "mid_tone": EventType("mid tone", "sound", 0.4, 1.2),
    "high_tone": EventType("high tone", "sound", 0.4, 1.2),
    "rising_chirp": EventType("rising chirp", "sound", 0.5, 1.2),
    "falling_chirp": EventType("falling chirp", "sound", 0.5, 1.2),
    "noise_burst": EventType("noise burst", "sound", 0.3, 1.0),
    "clicks": EventType("click train", "sound", 0.6, 1.5),
    "melody": EventType("melody", "music", 1.5, 3.5),
    "silence": EventType("silence", "silence", 0.6, 1.5),
}
_TONE_HZ = {"low_tone": 250.0, "mid_tone": 700.0, "high_tone": 2000.0}
_PENTATONIC_HZ = 220.0 * 2 ** (np.array([0, 3, 5, 7, 10, 12, 15, 17, 19, 22]) / 12)

DEFAULT_SPEAKERS: dict[str, str] = {"Anna": "en+f3", "Ben": "en+m3"}
DEFAULT_PHRASES: tuple[str, ...] = (
    "open the red door",
    "the train is late",
    "turn left at the bridge",
    "bring two green apples",
    "the meeting starts at noon",
    "please close the window",
    "the dog is asleep",
    "call me after lunch",
    "the river is cold",
    "where is the blue box",
    "we need more paper",
    "the lights are off",
)


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` program is on ``PATH`` (spoken phrases need it)."""
    return shutil.which("espeak-ng") is not None


@lru_cache(maxsize=64)
def _espeak_words(voice: str, words: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Synthesize ``words`` with one ``espeak-ng`` call and cut the output into one clip per word.

    One call per voice instead of one per word: starting espeak-ng dominates its cost. The words are
    separated by long SSML breaks and cut at the silences; the cut must find exactly one clip per word.
    """
    if not espeak_available():
        raise DataError(
            "spoken phrases need the espeak-ng program, which is not installed: install it "
            "(apt-get install espeak-ng) or set source.speech=off"
        )
    ssml = "<speak>" + ' <break time="700ms"/> '.join(words) + "</speak>"
    cmd = ["espeak-ng", "-m", "-v", voice, "-s", "165", "--stdout", ssml]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise DataError(
            f"espeak-ng failed for voice {voice!r} (exit {proc.returncode}): "
            f"{proc.stderr.decode(errors='replace').strip()}; check the voice name (espeak-ng --voices)"
        )
    import soundfile as sf

    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float64")
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    cuts = np.flatnonzero(np.diff(loud) > int(0.35 * sr))  # the breaks between words
    starts = np.concatenate([[loud[0]], loud[cuts + 1]])
    ends = np.concatenate([loud[cuts], [loud[-1]]]) + 1
    if len(starts) != len(words):
        raise DataError(
            f"espeak-ng voice {voice!r}: found {len(starts)} word clips for {len(words)} words; "
            "use plain lowercase words in source.phrases (no punctuation or numbers)"
        )
    return {
        w: resample(torch.from_numpy(audio[s:e].astype(np.float32)), sr, SAMPLE_RATE).numpy()
        for w, s, e in zip(words, starts, ends)
    }


def _fade(signal: np.ndarray) -> np.ndarray:
    n = min(int(_FADE_S * SAMPLE_RATE), len(signal) // 2)
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, n, dtype=np.float32))
        signal[:n] *= ramp
        signal[-n:] *= ramp[::-1]
    return signal


def _synthesize(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of event type ``name`` (unit RMS, except silence which is all zeros)."""
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    if name in _TONE_HZ:
        signal = np.sin(2 * np.pi * _TONE_HZ[name] * t)
    elif name in ("rising_chirp", "falling_chirp"):
        f0, f1 = (300.0, 3000.0) if name == "rising_chirp" else (3000.0, 300.0)
        span = max(t[-1], 1e-3)
        k = f1 / f0  # exponential sweep: instantaneous frequency f0 * k**(t / span)
        signal = np.sin(2 * np.pi * f0 * span / np.log(k) * (k ** (t / span) - 1))
    elif name == "noise_burst":
        signal = rng.standard_normal(n)
    elif name == "clicks":
        signal = np.zeros(n)
        period = int(SAMPLE_RATE / rng.uniform(6, 10))
        click = np.exp(-np.arange(64) / 8.0) * rng.standard_normal(64)
        for start in range(0, n - len(click), period):
            signal[start : start + len(click)] += click
    elif name == "melody":
        signal = np.zeros(n)
        pos = 0
        while pos < n:
            length = min(int(rng.uniform(0.15, 0.3) * SAMPLE_RATE), n - pos)
            note_t = np.arange(length) / SAMPLE_RATE
            f = rng.choice(_PENTATONIC_HZ)
            note = sum(
                a * np.sin(2 * np.pi * h * f * note_t) for h, a in ((1, 1), (2, 0.5), (3, 0.25))
            )
            signal[pos : pos + length] = note * np.exp(-note_t * 4)
            pos += length
    elif name == "silence":
        return np.zeros(n, dtype=np.float32)
    else:
        raise ConfigError(f"unknown event type {name!r}; choose from {sorted(EVENT_TYPES)}")
    rms = float(np.sqrt(np.mean(signal**2))) or 1.0
    return _fade((signal / rms).astype(np.float32))


@dataclass(frozen=True)
class _Placed:
    """One planned foreground event and what its rendering needs."""

    name: str  # an EVENT_TYPES key, or "speech"
    start: int  # first sample
    length: int  # samples
    snr_db: float
    seed: int
    speaker: str = ""
    voice: str = ""
    vocabulary: tuple[str, ...] = ()  # every word the voice was synthesized for (the cache key)
    words: tuple[tuple[str, int], ...] = ()  # (word, sample offset in the event) for speech


@dataclass(frozen=True)
class Scene:
    """A planned scene: its timeline, and what :meth:`render` needs to make the audio.

    Attributes:
        timeline: The ground truth (events with exact times; ``duration`` = the audio's length).
        num_samples: Length of the audio at :data:`SAMPLE_RATE`.
    """

    timeline: Timeline
    num_samples: int
    background: str
    seed: int
    placed: tuple[_Placed, ...] = field(repr=False)

    def render(self) -> np.ndarray:
        """The scene's waveform: float32, mono, :data:`SAMPLE_RATE`, peak at most 0.99."""
        rng = np.random.default_rng(self.seed)
        if self.background == "white":
            audio = rng.standard_normal(self.num_samples, dtype=np.float32) * _REFERENCE_RMS
        else:
            audio = np.zeros(self.num_samples, dtype=np.float32)
        for item in self.placed:
            gain = _REFERENCE_RMS * 10 ** (item.snr_db / 20)
            if item.name == "speech":
                clips = _espeak_words(item.voice, item.vocabulary)
                signal = np.zeros(item.length, dtype=np.float32)
                for word, offset in item.words:
                    clip = clips[word][: item.length - offset]
                    signal[offset : offset + len(clip)] = clip
                signal /= float(np.sqrt(np.mean(signal**2))) or 1.0
            else:
                signal = _synthesize(item.name, item.length, np.random.default_rng(item.seed))
            audio[item.start : item.start + item.length] += gain * signal
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak > 0.99:  # scaling everything keeps each event's SNR
            audio *= 0.99 / peak
        return audio


@dataclass(frozen=True)
class SceneSynthesizer:
    """Draws scenes: how long, which events, at which SNRs.

    Attributes:
        min_duration: Shortest scene in seconds.
        max_duration: Longest scene in seconds (up to 1800).
        min_events: Fewest foreground events.
        max_events: Most foreground events (fewer when they do not fit the duration).
        event_types: Names from :data:`EVENT_TYPES` to draw from.
        speech: Whether spoken phrases are drawn too (needs ``espeak-ng``).
        speakers: ``{speaker name: espeak-ng voice}``.
        phrases: The phrases speakers say (lowercase words).
        snr_db: ``(low, high)``: each event's SNR against the background is drawn from this range.
        overlap_prob: Chance that an event starts inside the previous one instead of after it.
        min_gap: Shortest silence between consecutive events, in seconds.
        background: ``"white"`` (noise at the reference level) or ``"none"``.
    """

    min_duration: float = 4.0
    max_duration: float = 10.0
    min_events: int = 2
    max_events: int = 4
    event_types: Sequence[str] = ("low_tone", "high_tone", "rising_chirp", "noise_burst", "melody")
    speech: bool = False
    speakers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SPEAKERS))
    phrases: Sequence[str] = DEFAULT_PHRASES
    snr_db: Sequence[float] = (10.0, 25.0)
    overlap_prob: float = 0.0
    min_gap: float = 0.25
    background: str = "white"

    def __post_init__(self) -> None:
        unknown = [t for t in self.event_types if t not in EVENT_TYPES]
        if unknown:
            raise ConfigError(
                f"source.event_types: unknown {unknown}; choose from {sorted(EVENT_TYPES)}"
            )
        if not self.event_types and not self.speech:
            raise ConfigError("source.event_types is empty and speech is off: nothing to place")
        if not 0 < self.min_duration <= self.max_duration <= 1800:
            raise ConfigError("need 0 < source.min_duration <= source.max_duration <= 1800 seconds")
        if not 1 <= self.min_events <= self.max_events:
            raise ConfigError("need 1 <= source.min_events <= source.max_events")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ConfigError(f"source.snr_db must be [low, high], got {list(self.snr_db)}")
        if self.background not in ("white", "none"):
            raise ConfigError(
                f"source.background must be 'white' or 'none', got {self.background!r}"
            )
        if self.speech and not self.speakers:
            raise ConfigError("source.speakers is empty but speech is on")
        bad = [p for p in self.phrases if not re.fullmatch(r"[a-z]+( [a-z]+)*", p)]
        if self.speech and (bad or not self.phrases):
            raise ConfigError(
                f"source.phrases must be lowercase words separated by spaces; bad: {bad}"
            )

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label a scene can hold (the vocabulary multiple-choice distractors come from)."""
        labels = {
            EVENT_TYPES[t].label for t in self.event_types if EVENT_TYPES[t].kind != "silence"
        }
        return tuple(sorted(labels | ({"speech"} if self.speech else set())))

    def plan(self, seed: int | Sequence[int], *, name: str = "scene") -> Scene:
        """Draw one scene; the same seed always gives the same scene.

        Args:
            seed: Seed (or seed sequence, e.g. ``[build_seed, scene_index]``).
            name: Used as the timeline's source in messages.
        """
        rng = np.random.default_rng(seed)
        duration = round(float(rng.uniform(self.min_duration, self.max_duration)), 2)
        total = round(duration * SAMPLE_RATE)
        count = int(rng.integers(self.min_events, self.max_events + 1))
        choices = list(self.event_types) + (["speech"] if self.speech else [])
        drafts = [self._draft(str(rng.choice(choices)), rng) for _ in range(count)]
        gap = -(-int(self.min_gap * SAMPLE_RATE) // _TICK) * _TICK  # rounded up to the grid
        while drafts and sum(d[1] for d in drafts) + gap * (len(drafts) + 1) > total:
            drafts.pop()  # what does not fit is not placed (the scene just holds fewer events)
        if not drafts:
            raise ConfigError(
                f"source.min_duration {self.min_duration} s is too short for any event; raise it"
            )
        slack = total - sum(d[1] for d in drafts) - gap * (len(drafts) + 1)
        shares = rng.dirichlet(np.ones(len(drafts) + 1)) * slack
        placed, events, cursor = [], [], 0
        for i, (kind, length, extra) in enumerate(drafts):
            start = cursor + gap + _ticks(shares[i])
            previous = placed[-1] if placed else None
            if (
                previous is not None
                and kind not in ("speech", "silence")
                and previous.name not in ("speech", "silence", kind)
                and rng.random() < self.overlap_prob
            ):  # start inside the previous event; the sequence still advances from its end
                start = previous.start + _ticks(previous.length * rng.uniform(0.2, 0.6))
            if start + gap >= total:
                break  # an overlap pushed the sequence past the end: the scene holds fewer events
            length = min(length, total - start)
            item = _Placed(
                name=kind,
                start=start,
                length=length,
                snr_db=float(rng.uniform(*self.snr_db)),
                seed=int(rng.integers(2**31)),
                **extra,
            )
            placed.append(item)
            events.append(self._event(item))
            cursor = max(cursor, start + length)
        timeline = Timeline(
            tuple(events),
            duration=total / SAMPLE_RATE,
            source=f"synthetic:{name}",
            labels=self.labels,
            speakers=tuple(self.speakers) if self.speech else (),
        )
        return Scene(timeline, total, self.background, int(rng.integers(2**31)), tuple(placed))

    def _draft(self, kind: str, rng: np.random.Generator) -> tuple[str, int, dict]:
        """``(type, length in samples, extra _Placed fields)`` for one event."""
        if kind != "speech":
            spec = EVENT_TYPES[kind]
            length = _ticks(rng.uniform(spec.min_duration, spec.max_duration) * SAMPLE_RATE)
            return kind, max(_TICK, length), {}
        speaker = str(rng.choice(list(self.speakers)))
        voice = self.speakers[speaker]
        phrase = str(rng.choice(list(self.phrases)))
        clips = _espeak_words(voice, self.vocabulary)
        words, offset = [], 0
        for word in phrase.split():
            words.append((word, offset))
            offset += len(clips[word]) + int(0.08 * SAMPLE_RATE)
        length = max(
            _TICK, _ticks(offset - int(0.08 * SAMPLE_RATE))
        )  # the last word's tail may lose <10 ms
        extra = {"speaker": speaker, "voice": voice, "vocabulary": self.vocabulary}
        return "speech", length, {**extra, "words": tuple(words)}

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """Every word of :attr:`phrases`, sorted (what each voice is synthesized for, once)."""
        return tuple(sorted({w for p in self.phrases for w in p.split()}))

    def _event(self, item: _Placed) -> Event:
        onset = item.start / SAMPLE_RATE
        offset = (item.start + item.length) / SAMPLE_RATE
        if item.name != "speech":
            spec = EVENT_TYPES[item.name]
            return Event(onset, offset, spec.label, kind=spec.kind)
        clips = _espeak_words(item.voice, item.vocabulary)
        words = tuple(
            Word(
                onset + at / SAMPLE_RATE, min(offset, onset + (at + len(clips[w])) / SAMPLE_RATE), w
            )
            for w, at in item.words
        )
        text = " ".join(w for w, _ in item.words)
        return Event(
            onset, offset, "speech", kind="speech", speaker=item.speaker, text=text, words=words
        )
