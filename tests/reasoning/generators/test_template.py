"""Template generator: 1,000 samples over synthetic scenes are valid, grounded and right.

The answers are recomputed here from the timeline and the question text, independently of the generator.
"""

from __future__ import annotations

import random
import re
import shutil
from collections import Counter

import pytest

from afnext.errors import ConfigError
from afnext.reasoning.format import validate_response
from afnext.reasoning.generators.base import Generator, QASample
from afnext.reasoning.generators.template import TemplateGenerator
from afnext.reasoning.scenes import SceneSynthesizer
from afnext.reasoning.timeline import Event, Timeline

HAS_ESPEAK = shutil.which("espeak-ng") is not None
ALL_TYPES = ["count", "order", "after", "localize", "duration", "cooccur", "speaker", "summary"]


def _timelines(n: int, *, speech: bool) -> list[Timeline]:
    synth = SceneSynthesizer(
        min_duration=4,
        max_duration=14,
        min_events=2,
        max_events=6,
        event_types=(
            "low_tone",
            "high_tone",
            "rising_chirp",
            "noise_burst",
            "melody",
            "clicks",
            "silence",
        ),
        speech=speech,
        overlap_prob=0.35,
    )
    return [synth.plan([11, i]).timeline for i in range(n)]


def _askable(timeline: Timeline) -> list[Event]:
    return [e for e in timeline.events if e.kind in ("sound", "music", "speech")]


def _options(question: str) -> list[str]:
    return re.findall(r"^\([A-J]\) (.*)$", question, re.MULTILINE)


def _chosen(sample: QASample) -> str:
    """The answer's text; for multiple choice, the option its letter points at (checked to agree)."""
    options = _options(sample.question)
    if not options:
        return sample.answer
    letter, text = re.fullmatch(r"\(([A-J])\) (.*)", sample.answer).groups()
    assert options["ABCDEFGHIJ".index(letter)] == text
    assert list(sample.choices) == options
    return text


def _names(question: str, *patterns: str) -> list[str]:
    for pattern in patterns:
        match = re.search(pattern, question)
        if match:
            return list(match.groups())
    raise AssertionError(f"no known wording in {question!r}")


def _first(events: list[Event], label: str) -> Event:
    return next(e for e in events if e.label == label)


def expected_answer(sample: QASample, timeline: Timeline) -> str:
    """The right answer, recomputed from the timeline."""
    events = _askable(timeline)
    q = sample.question.split("\n")[0]
    kind = sample.question_type
    if kind == "count":
        (label,) = _names(
            q,
            r"How many times is the (.+) heard\?",
            r"How many times does the (.+) occur in the audio\?",
        )
        return str(sum(e.label == label for e in events))
    if kind in ("order", "duration"):
        if "these sounds" in q:
            candidates = [o for o in _options(sample.question) if any(e.label == o for e in events)]
        else:
            candidates = _names(
                q,
                r"Which is heard first, the (.+) or the (.+)\?",
                r"Which comes first: the (.+) or the (.+)\?",
                r"Which lasts longer, the (.+) or the (.+)\?",
                r"Which is longer: the (.+) or the (.+)\?",
            )
        if kind == "order":
            return min(candidates, key=lambda c: _first(events, c).onset)
        return max(candidates, key=lambda c: _first(events, c).duration)
    if kind == "after":
        (label,) = _names(
            q,
            r"Which sound starts right after the (.+)\?",
            r"What is heard next after the (.+) starts\?",
        )
        anchor = _first(events, label)
        return min((e for e in events if e.onset > anchor.onset), key=lambda e: e.onset).label
    if kind == "localize":
        (label,) = _names(q, r"When does the (.+) start\?", r"At what time does the (.+) begin\?")
        return f"{round(_first(events, label).onset, 1):.1f} seconds"
    if kind == "cooccur":
        a, b = _names(
            q,
            r"Is the (.+) heard at the same time as the (.+)\?",
            r"Do the (.+) and the (.+) overlap\?",
        )
        x, y = _first(events, a), _first(events, b)
        return "yes" if min(x.offset, y.offset) > max(x.onset, y.onset) else "no"
    if kind == "speaker":
        (quote,) = _names(q, r'Who says "(.+)"\?', r'Which speaker says "(.+)"\?')
        return next(e.speaker for e in events if e.text and e.text.startswith(quote.rstrip(". ")))
    if kind == "summary":
        parts = [
            f'{e.speaker} says "{e.text}"' if e.kind == "speech" else f"the {e.label}"
            for e in sorted(events, key=lambda e: e.onset)
        ]
        return "The recording holds " + ", then ".join(parts) + "."
    raise AssertionError(kind)


def _names_of(event: Event) -> list[str]:
    """How a chain may name an event: ``the <label>``, and for speech its speaker or quoted words."""
    names = [f"the {event.label}"]
    if event.kind == "speech" and event.text:
        words = event.text.split()
        names.append('"' + " ".join(words[:10]) + (" ..." if len(words) > 10 else "") + '"')
    if event.kind == "speech" and event.speaker:
        names.append(event.speaker)
    return names


def assert_grounded(sample: QASample, timeline: Timeline) -> None:
    """Every cited span overlaps an event that the step names: the name written last before the tag
    (``The melody <t>2-4</t> starts before the low tone <t>5-6</t>``: 2-4 is the melody's, 5-6 the low
    tone's)."""
    for step in sample.response.steps:
        assert step.spans, step
        text = step.text
        for match in re.finditer(r"<t>([\d.]+)-([\d.]+)</t>", text):
            start, end = float(match.group(1)), float(match.group(2))
            before = text[: match.start()].lower()
            mentions = [
                (before.rfind(name.lower()) + len(name), e)
                for e in timeline.events
                for name in _names_of(e)
                if before.rfind(name.lower()) >= 0
            ]
            assert mentions, (text, match.group())
            last = max(at for at, _ in mentions)
            named = [e for at, e in mentions if at == last]
            assert any(min(end, e.offset) - max(start, e.onset) > 0 for e in named), (
                text,
                match.group(),
                named,
            )


def test_thousand_samples_are_valid_grounded_and_right() -> None:
    generators = [
        TemplateGenerator(question_types=ALL_TYPES, choices=4, samples_per_timeline=3),
        TemplateGenerator(question_types=ALL_TYPES, choices=2, samples_per_timeline=3),
        TemplateGenerator(question_types=ALL_TYPES, choices=0, samples_per_timeline=3),
    ]
    checked: Counter = Counter()
    for i, timeline in enumerate(_timelines(600, speech=HAS_ESPEAK)):
        generator = generators[i % 3]
        for sample in generator.generate(timeline, random.Random(i)):
            assert validate_response(sample.think_text(), duration=timeline.duration) == []
            assert_grounded(sample, timeline)
            assert _chosen(sample) == expected_answer(sample, timeline), (sample, timeline.events)
            checked[sample.question_type] += 1
        if sum(checked.values()) >= 1000:
            break
    assert sum(checked.values()) >= 1000
    expected_types = set(ALL_TYPES) - (set() if HAS_ESPEAK else {"speaker"})
    assert set(checked) == expected_types, checked


def test_speaker_questions_without_espeak() -> None:
    timeline = Timeline(
        (
            Event(0.5, 2, "speech", kind="speech", speaker="Anna", text="open the door"),
            Event(3, 4.5, "speech", kind="speech", speaker="Ben", text="close the door"),
            Event(5, 6, "low tone"),
        ),
        duration=7,
    )
    generator = TemplateGenerator(question_types=["speaker"], choices=2)
    for seed in range(10):
        (sample,) = generator.generate(timeline, random.Random(seed))
        assert _chosen(sample) == expected_answer(sample, timeline)
        assert set(sample.choices) == {"Anna", "Ben"}


def test_deterministic_for_a_seed_and_protocol() -> None:
    generator = TemplateGenerator()
    assert isinstance(generator, Generator)
    timelines = _timelines(20, speech=False)
    first = [generator.generate(t, random.Random(i)) for i, t in enumerate(timelines)]
    again = [TemplateGenerator().generate(t, random.Random(i)) for i, t in enumerate(timelines)]
    assert first == again
    assert generator.report()["template"]["asked.count"] > 0


def test_multiple_choice_options_and_open_form() -> None:
    timeline = Timeline(
        (
            Event(0.5, 1.0, "low tone"),
            Event(2.0, 4.0, "melody", kind="music"),
            Event(5.0, 5.5, "high tone"),
        ),
        duration=6,
        labels=("low tone", "melody", "high tone", "noise burst", "clicks"),
    )
    for choices, expected_options in ((2, 2), (4, 4), (0, 0)):
        generator = TemplateGenerator(question_types=["order"], choices=choices)
        (sample,) = generator.generate(timeline, random.Random(1))
        assert len(sample.choices) == expected_options
        assert len(_options(sample.question)) == expected_options
        assert _chosen(sample) == expected_answer(sample, timeline)
    (count,) = TemplateGenerator(question_types=["count"], choices=4).generate(
        timeline, random.Random(0)
    )
    assert len(count.choices) == 4 and _chosen(count) == "1"


def test_ambiguous_questions_are_not_asked() -> None:
    # Two sounds starting 0.1 s apart: "which is first" would be ambiguous.
    timeline = Timeline((Event(1.0, 2.0, "low tone"), Event(1.1, 1.6, "high tone")), duration=3)
    generator = TemplateGenerator(question_types=["order", "after"], margin=0.25)
    assert generator.generate(timeline, random.Random(0)) == []
    assert generator.report()["template"] == {"not_askable.after": 1, "not_askable.order": 1}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"question_types": ["count", "nonsense"]}, "generator.question_types"),
        ({"choices": 1}, "generator.choices"),
        ({"samples_per_timeline": 0}, "generator.samples_per_timeline"),
    ],
)
def test_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TemplateGenerator(**kwargs)


def test_several_questions_per_type_ask_about_other_events() -> None:
    timeline = Timeline(
        (
            Event(0.5, 1.0, "low tone"),
            Event(2.0, 4.0, "melody", kind="music"),
            Event(5.0, 5.5, "high tone"),
            Event(6.5, 7.5, "noise burst"),
        ),
        duration=8,
    )
    generator = TemplateGenerator(
        question_types=["order"], choices=2, samples_per_timeline=5, questions_per_type=5
    )
    samples = generator.generate(timeline, random.Random(3))
    assert 2 <= len(samples) <= 5
    pairs = [frozenset(sample.choices) for sample in samples]
    assert len(set(pairs)) == len(pairs)  # never the same two sounds twice
    for sample in samples:
        assert _chosen(sample) == expected_answer(sample, timeline)
    one = TemplateGenerator(question_types=["order"], choices=2, samples_per_timeline=5)
    assert len(one.generate(timeline, random.Random(3))) == 1
