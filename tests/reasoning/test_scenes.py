"""Synthetic scenes: reproducible, timelines match the audio, SNRs as asked, speech through espeak-ng."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from afnext.errors import ConfigError
from afnext.reasoning import scenes as scenes_module
from afnext.reasoning.scenes import EVENT_TYPES, SAMPLE_RATE, SceneSynthesizer
from afnext.reasoning.sources import SyntheticSource

HAS_ESPEAK = shutil.which("espeak-ng") is not None


def _region(audio: np.ndarray, onset: float, offset: float) -> np.ndarray:
    return audio[int(onset * SAMPLE_RATE) : int(offset * SAMPLE_RATE)]


def test_same_seed_same_scene_other_seed_other_scene() -> None:
    synth = SceneSynthesizer(event_types=tuple(EVENT_TYPES), overlap_prob=0.3)
    a, b, c = synth.plan([1, 2]), synth.plan([1, 2]), synth.plan([1, 3])
    assert a.timeline == b.timeline
    np.testing.assert_array_equal(a.render(), b.render())
    assert a.timeline != c.timeline


def test_timelines_fit_the_audio() -> None:
    synth = SceneSynthesizer(
        min_duration=3, max_duration=8, min_events=2, max_events=5, event_types=tuple(EVENT_TYPES)
    )
    for seed in range(30):
        scene = synth.plan(seed)
        timeline = scene.timeline
        assert 3 <= timeline.duration <= 8
        assert scene.num_samples == round(timeline.duration * SAMPLE_RATE)
        assert 1 <= len(timeline.events) <= 5
        assert all(0 <= e.onset < e.offset <= timeline.duration for e in timeline.events)
        starts = [e.onset for e in timeline.events]
        assert starts == sorted(starts)
        for prev, nxt in zip(
            timeline.events, timeline.events[1:]
        ):  # no overlaps asked: gaps >= min_gap
            assert nxt.onset - prev.offset >= 0.25 - 1e-9
        audio = scene.render()
        assert audio.dtype == np.float32 and len(audio) == scene.num_samples
        assert np.abs(audio).max() <= 0.99 + 1e-6


def test_events_are_mixed_at_the_chosen_snr() -> None:
    synth = SceneSynthesizer(
        min_events=1, max_events=1, event_types=("noise_burst",), snr_db=(20, 20)
    )
    scene = synth.plan(0)
    audio = scene.render()
    (event,) = scene.timeline.events
    inside = float(np.mean(_region(audio, event.onset + 0.02, event.offset - 0.02) ** 2))
    outside = float(np.mean(audio[: int(event.onset * SAMPLE_RATE)] ** 2))
    snr = 10 * np.log10((inside - outside) / outside)
    assert abs(snr - 20) < 1.0


@pytest.mark.parametrize(
    ("name", "hz"), [("low_tone", 250), ("mid_tone", 700), ("high_tone", 2000)]
)
def test_tones_have_their_pitch(name: str, hz: float) -> None:
    scene = SceneSynthesizer(
        min_events=1, max_events=1, event_types=(name,), background="none"
    ).plan(4)
    (event,) = scene.timeline.events
    region = _region(scene.render(), event.onset, event.offset)
    peak = np.argmax(np.abs(np.fft.rfft(region))) * SAMPLE_RATE / len(region)
    assert abs(peak - hz) < 5
    assert event.label == EVENT_TYPES[name].label


def test_silence_is_silent_and_background_none_is_zero() -> None:
    synth = SceneSynthesizer(
        min_events=1, max_events=1, event_types=("silence",), background="none"
    )
    scene = synth.plan(0)
    assert scene.timeline.events[0].kind == "silence"
    assert not scene.render().any()


@pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng is not installed")
def test_spoken_phrases_are_word_timed() -> None:
    synth = SceneSynthesizer(
        min_events=3,
        max_events=3,
        event_types=(),
        speech=True,
        background="none",
        max_duration=15,
        min_duration=14,
    )
    scene = synth.plan(5)
    audio = scene.render()
    speech = scene.timeline.of_kind("speech")
    assert speech and all(e.speaker in ("Anna", "Ben") and e.text for e in speech)
    for event in speech:
        assert [w.text for w in event.words] == event.text.split()
        assert event.words[0].start == event.onset
        for word in event.words:
            assert event.onset <= word.start < word.end <= event.offset
            assert np.sqrt(np.mean(_region(audio, word.start, word.end) ** 2)) > 0.01
        # the audio before the phrase (the gap) is silent
        assert not _region(audio, event.onset - 0.2, event.onset - 0.05).any()


def test_speech_without_espeak_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scenes_module.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"source\.speech=on needs the espeak-ng program"):
        SyntheticSource(num_scenes=2, speech="on")
    with pytest.warns(UserWarning, match="espeak-ng is not installed"):
        source = SyntheticSource(num_scenes=2, speech="auto")
    assert source.report()["speech"].startswith("off: espeak-ng is not installed")
    assert "speech" not in source.synthesizer.labels


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"event_types": ("trumpet",)}, "source.event_types: unknown"),
        ({"min_duration": 5, "max_duration": 2}, "source.min_duration"),
        ({"max_duration": 4000}, "<= 1800"),
        ({"min_events": 0}, "source.min_events"),
        ({"snr_db": (30, 10)}, "source.snr_db"),
        ({"background": "pink"}, "source.background"),
        ({"speech": True, "phrases": ("Hello, world!",)}, "source.phrases"),
    ],
)
def test_bad_settings_name_the_key(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SceneSynthesizer(**kwargs)


@pytest.mark.slow
def test_thirty_minute_scene() -> None:
    synth = SceneSynthesizer(
        min_duration=1800,
        max_duration=1800,
        min_events=300,
        max_events=300,
        event_types=tuple(EVENT_TYPES),
        speech=HAS_ESPEAK,
        overlap_prob=0.2,
    )
    started = time.perf_counter()
    scene = synth.plan(0)
    audio = scene.render()
    seconds = time.perf_counter() - started
    assert len(audio) == 1800 * SAMPLE_RATE
    assert len(scene.timeline.events) == 300
    assert scene.timeline.events[-1].offset > 1500  # spread over the whole half hour
    print(f"30-minute scene planned and rendered in {seconds:.1f} s")
