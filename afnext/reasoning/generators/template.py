"""Template questions whose answers are computed from the timeline, so they are right by construction.

Question types (``question_types``):

* ``count``: how many times is the X heard;
* ``order``: which is heard first (of two, or of the listed options);
* ``after``: which sound starts next after the X;
* ``localize``: when does the X start;
* ``duration``: which lasts longer (of two, or the longest of the options);
* ``cooccur``: is the X heard at the same time as the Y (yes / no);
* ``speaker``: who says "..." (needs speech with speakers and words);
* ``summary``: describe the sounds in order (always open-ended).

Every step of a chain names an event and cites its span, so each cited span overlaps the event it names.
Questions that would be ambiguous (two candidates closer than ``margin`` seconds) are not asked.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from afnext.errors import ConfigError
from afnext.reasoning.format import Span, Step, TACoTResponse
from afnext.reasoning.generators.base import QASample
from afnext.reasoning.timeline import Event, Timeline

__all__ = ["QUESTION_TYPES", "TemplateGenerator", "cite"]

QUESTION_TYPES = (
    "count",
    "order",
    "after",
    "localize",
    "duration",
    "cooccur",
    "speaker",
    "summary",
)
LETTERS = "ABCDEFGHIJ"
_ORDINALS = ("First", "Second", "Third", "Fourth", "Fifth", "Sixth", "Seventh", "Eighth", "Ninth")
MC_INSTRUCTION = "Answer with the letter of the correct option."


def cite(event: Event, duration: float) -> str:
    """The ``<t>`` tag of an event, to the centisecond, never past the audio's end."""
    end = min(round(event.offset, 2), int(duration * 100) / 100)
    return Span(min(round(event.onset, 2), end), end).tag()


def _quote(text: str, max_words: int = 10) -> str:
    words = text.split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


@dataclass
class _Context:
    timeline: Timeline
    rng: random.Random
    events: tuple[Event, ...]  # the askable events: sound, music, speech

    @property
    def duration(self) -> float:
        assert self.timeline.duration is not None  # checked in generate()
        return self.timeline.duration

    def tag(self, event: Event) -> str:
        return cite(event, self.duration)

    def unique(self) -> list[Event]:
        """Events whose label occurs once, so "the X" names one event."""
        counts = Counter(e.label for e in self.events)
        return [e for e in self.events if counts[e.label] == 1]

    def absent_labels(self) -> list[str]:
        present = {e.label for e in self.events}
        return [label for label in self.timeline.labels if label not in present]


@dataclass
class TemplateGenerator:
    """Counting, ordering, localisation, duration, co-occurrence, speaker and summary questions.

    Args:
        question_types: Which types to ask, from :data:`QUESTION_TYPES`.
        choices: Options per multiple-choice question (2 to 10); 0 asks open questions. Label questions
            list the present candidates and pad with absent labels of the timeline's vocabulary, so a
            question has fewer options only when the vocabulary is too small. ``cooccur`` always has 2
            (yes / no) and ``summary`` is always open.
        samples_per_timeline: Most questions per audio file.
        questions_per_type: Most questions of one type per audio file (each about other events:
            never two citing the same events); 1 gives one question of each type.
        margin: Seconds by which compared times must differ for a question to be asked.
        max_summary_events: Longer timelines get no ``summary`` question.
        paraphrase: Vary question wording (False: always the first wording).
    """

    question_types: Sequence[str] = QUESTION_TYPES
    choices: int = 4
    samples_per_timeline: int = 3
    questions_per_type: int = 1
    margin: float = 0.25
    max_summary_events: int = 30
    paraphrase: bool = True
    _counts: Counter = field(default_factory=Counter, init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = [q for q in self.question_types if q not in QUESTION_TYPES]
        if unknown or not self.question_types:
            raise ConfigError(
                f"generator.question_types: unknown or empty {unknown}; choose from {QUESTION_TYPES}"
            )
        if self.choices != 0 and not 2 <= self.choices <= len(LETTERS):
            raise ConfigError(f"generator.choices must be 0 (open) or 2..10, got {self.choices}")
        if self.samples_per_timeline < 1:
            raise ConfigError("generator.samples_per_timeline must be >= 1")
        if self.questions_per_type < 1:
            raise ConfigError("generator.questions_per_type must be >= 1")
        self._makers: dict[str, Callable[[_Context], QASample | None]] = {
            "count": self._count,
            "order": self._order,
            "after": self._after,
            "localize": self._localize,
            "duration": self._duration,
            "cooccur": self._cooccur,
            "speaker": self._speaker,
            "summary": self._summary,
        }

    def generate(self, timeline: Timeline, rng: random.Random) -> list[QASample]:
        if timeline.duration is None:
            raise ConfigError(
                f"{timeline.source}: the template generator needs the audio's duration"
            )
        ctx = _Context(timeline, rng, timeline.of_kind("sound", "music", "speech"))
        order = list(dict.fromkeys(self.question_types))
        rng.shuffle(order)
        samples: list[QASample] = []
        asked: set[tuple[str, frozenset[Span]]] = set()
        for round_ in range(self.questions_per_type):
            for question_type in order:
                sample = self._makers[question_type](ctx)
                if sample is None or _key(sample) in asked:
                    if round_ == 0:  # later rounds just find nothing new
                        self._counts[f"not_askable.{question_type}"] += 1
                    continue
                samples.append(sample)
                asked.add(_key(sample))
                self._counts[f"asked.{question_type}"] += 1
                if len(samples) == self.samples_per_timeline:
                    return samples
        return samples

    def report(self) -> dict[str, Any]:
        return {"template": dict(sorted(self._counts.items()))}

    # -- helpers ---------------------------------------------------------------------------------
    def _wording(self, rng: random.Random, *options: str) -> str:
        return rng.choice(options) if self.paraphrase else options[0]

    def _sample(
        self,
        ctx: _Context,
        question_type: str,
        question: str,
        steps: list[str],
        correct: str,
        distractors: Sequence[str] = (),
        *,
        fixed_options: bool = False,
    ) -> QASample:
        """A sample; multiple choice when ``choices`` > 0 (or ``fixed_options``: all options as given)."""
        response_steps = tuple(Step(s) for s in steps)
        if self.choices == 0 and not fixed_options:
            return QASample(question_type, question, TACoTResponse(response_steps, correct))
        wanted = len(distractors) + 1 if fixed_options else self.choices
        options = [
            correct,
            *list(dict.fromkeys(d for d in distractors if d != correct))[: wanted - 1],
        ]
        ctx.rng.shuffle(options)
        listed = "\n".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
        answer = f"({LETTERS[options.index(correct)]}) {correct}"
        text = f"{question}\n{listed}\n{MC_INSTRUCTION}"
        return QASample(question_type, text, TACoTResponse(response_steps, answer), tuple(options))

    def _spread(
        self, ctx: _Context, events: list[Event], key: Callable[[Event], float]
    ) -> list[Event]:
        """A random subset of ``events`` whose ``key`` values differ pairwise by at least ``margin``;
        as many as the question wants (2 when open)."""
        wanted = max(2, min(self.choices, len(events))) if self.choices else 2
        picked: list[Event] = []
        for event in ctx.rng.sample(events, len(events)):
            if all(abs(key(event) - key(p)) >= self._gap(key(event), key(p), key) for p in picked):
                picked.append(event)
            if len(picked) == wanted:
                break
        return picked

    def _gap(self, a: float, b: float, key: Callable[[Event], float]) -> float:
        # Durations must differ by 20 % too: "which is longer" is not a question at 1.00 vs 1.05 s.
        return max(self.margin, 0.2 * max(a, b)) if key is _length else self.margin

    def _label_distractors(self, ctx: _Context, present: Sequence[str]) -> list[str]:
        absent = ctx.absent_labels()
        ctx.rng.shuffle(absent)
        return [*present, *absent]

    # -- question types ---------------------------------------------------------------------------
    def _count(self, ctx: _Context) -> QASample | None:
        labels = sorted({e.label for e in ctx.events})
        if not labels:
            return None
        label = ctx.rng.choice(labels)
        hits = ctx.timeline.with_label(label)
        n = len(hits)
        question = self._wording(
            ctx.rng,
            f"How many times is the {label} heard?",
            f"How many times does the {label} occur in the audio?",
        )
        steps = [
            f"Occurrence {i} of the {label} is at {ctx.tag(e)}." for i, e in enumerate(hits, 1)
        ]
        tags = ", ".join(ctx.tag(e) for e in hits)
        steps.append(f"In total the {label} occurs {n} time{'s' if n > 1 else ''}: {tags}.")
        near = [c for c in range(max(1, n - 3), n + 4) if c != n]
        ctx.rng.shuffle(near)
        return self._sample(ctx, "count", question, steps, str(n), [str(c) for c in near])

    def _order(self, ctx: _Context) -> QASample | None:
        firsts = {}
        for event in ctx.events:
            firsts.setdefault(event.label, event)
        picked = self._spread(ctx, list(firsts.values()), _onset)
        if len(picked) < 2:
            return None
        picked.sort(key=_onset)
        winner = picked[0]
        names = [p.label for p in picked]
        if len(picked) == 2 and self.choices <= 2:
            a, b = ctx.rng.sample(names, 2)
            question = self._wording(
                ctx.rng,
                f"Which is heard first, the {a} or the {b}?",
                f"Which comes first: the {a} or the {b}?",
            )
        else:
            question = "Which of these sounds is heard first?"
        steps = [f"The {p.label} is first heard at {ctx.tag(p)}." for p in picked]
        others = _and([f"the {p.label} {ctx.tag(p)}" for p in picked[1:]])
        steps.append(
            f"The {winner.label} {ctx.tag(winner)} starts before {others}, so it comes first."
        )
        return self._sample(
            ctx, "order", question, steps, winner.label, self._label_distractors(ctx, names)
        )

    def _after(self, ctx: _Context) -> QASample | None:
        for anchor in ctx.rng.sample(ctx.unique(), len(ctx.unique())):
            others = [e for e in ctx.events if e is not anchor]
            if any(abs(e.onset - anchor.onset) < self.margin for e in others):
                continue
            later = [e for e in others if e.onset > anchor.onset]
            if not later or (len(later) > 1 and later[1].onset - later[0].onset < self.margin):
                continue
            nxt = later[0]
            question = self._wording(
                ctx.rng,
                f"Which sound starts right after the {anchor.label}?",
                f"What is heard next after the {anchor.label} starts?",
            )
            steps = [
                f"The {anchor.label} starts at {ctx.tag(anchor)}.",
                f"The next sound to start is the {nxt.label} at {ctx.tag(nxt)}.",
            ]
            present = [e.label for e in ctx.events if e.label not in (anchor.label, nxt.label)]
            distractors = self._label_distractors(ctx, list(dict.fromkeys(present)))
            return self._sample(ctx, "after", question, steps, nxt.label, distractors)
        return None

    def _localize(self, ctx: _Context) -> QASample | None:
        unique = ctx.unique()
        if not unique:
            return None
        target = ctx.rng.choice(unique)
        start = round(target.onset, 1)
        question = self._wording(
            ctx.rng,
            f"When does the {target.label} start?",
            f"At what time does the {target.label} begin?",
        )
        steps = [
            f"The {target.label} is heard at {ctx.tag(target)}, so it starts at {start:.1f} seconds."
        ]
        # Distractor times: other onsets first, then random times, all at least `spacing` apart.
        k = max(self.choices, 2)
        spacing = max(0.5, min(2.0, ctx.duration / (2 * k)))
        pool = [round(e.onset, 1) for e in ctx.events] + [
            round(ctx.rng.uniform(0, ctx.duration), 1) for _ in range(8 * k)
        ]
        times = [start]
        for t in pool:
            if all(abs(t - u) >= spacing for u in times) and len(times) < k:
                times.append(t)
        return self._sample(
            ctx,
            "localize",
            question,
            steps,
            f"{start:.1f} seconds",
            [f"{t:.1f} seconds" for t in times[1:]],
        )

    def _duration(self, ctx: _Context) -> QASample | None:
        picked = self._spread(ctx, ctx.unique(), _length)
        if len(picked) < 2:
            return None
        picked.sort(key=_onset)
        winner = max(picked, key=_length)
        names = [p.label for p in picked]
        if len(picked) == 2 and self.choices <= 2:
            a, b = ctx.rng.sample(names, 2)
            question = self._wording(
                ctx.rng,
                f"Which lasts longer, the {a} or the {b}?",
                f"Which is longer: the {a} or the {b}?",
            )
        else:
            question = "Which of these sounds lasts the longest?"
        steps = [
            f"The {p.label} lasts from {ctx.tag(p)}, about {p.duration:.1f} seconds."
            for p in picked
        ]
        steps.append(f"The {winner.label} {ctx.tag(winner)} is the longest of them.")
        return self._sample(
            ctx, "duration", question, steps, winner.label, self._label_distractors(ctx, names)
        )

    def _cooccur(self, ctx: _Context) -> QASample | None:
        unique = ctx.unique()
        pairs = {"yes": [], "no": []}
        for i, a in enumerate(unique):
            for b in unique[i + 1 :]:
                shared = a.overlap(b)
                if shared >= self.margin:
                    pairs["yes"].append((a, b))
                elif shared <= 0:
                    pairs["no"].append((a, b))
        options = [answer for answer, found in pairs.items() if found]
        if not options:
            return None
        answer = ctx.rng.choice(options)
        a, b = ctx.rng.choice(pairs[answer])
        x, y = ctx.rng.sample([a, b], 2)
        question = self._wording(
            ctx.rng,
            f"Is the {x.label} heard at the same time as the {y.label}?",
            f"Do the {x.label} and the {y.label} overlap?",
        )
        steps = [
            f"The {a.label} is heard at {ctx.tag(a)}.",
            f"The {b.label} is heard at {ctx.tag(b)}.",
        ]
        if answer == "yes":  # cite the events themselves: every cited span is an annotated event
            steps.append(
                f"The {b.label} {ctx.tag(b)} starts before the {a.label} {ctx.tag(a)} ends, so they "
                f"overlap for about {shared_seconds(a, b):.1f} seconds."
            )
        else:
            steps.append(
                f"The {b.label} {ctx.tag(b)} starts after the {a.label} {ctx.tag(a)} ends, "
                "so they do not overlap."
            )
        return self._sample(
            ctx,
            "cooccur",
            question,
            steps,
            answer,
            ["no" if answer == "yes" else "yes"],
            fixed_options=self.choices > 0,
        )

    def _speaker(self, ctx: _Context) -> QASample | None:
        spoken = [e for e in ctx.events if e.kind == "speech" and e.speaker and e.text]
        quotes = Counter(_quote(e.text or "") for e in spoken)
        candidates = [e for e in spoken if quotes[_quote(e.text or "")] == 1]
        if not candidates:
            return None
        target = ctx.rng.choice(candidates)
        quote = _quote(target.text or "")
        question = self._wording(ctx.rng, f'Who says "{quote}"?', f'Which speaker says "{quote}"?')
        steps = [f'The words "{quote}" are spoken at {ctx.tag(target)} by {target.speaker}.']
        others = [s for s in ctx.timeline.speakers if s != target.speaker]
        ctx.rng.shuffle(others)
        return self._sample(ctx, "speaker", question, steps, str(target.speaker), others)

    def _summary(self, ctx: _Context) -> QASample | None:
        if not ctx.events or len(ctx.events) > self.max_summary_events:
            return None
        question = self._wording(
            ctx.rng,
            "Describe the sounds in the recording in the order they occur.",
            "What happens in this audio, from start to end?",
        )
        steps, parts = [], []
        for i, event in enumerate(ctx.events):
            ordinal = _ORDINALS[i] if i < len(_ORDINALS) else f"Then (#{i + 1})"
            if event.kind == "speech" and event.speaker and event.text:
                said = f'{event.speaker} says "{_quote(event.text)}"'
                steps.append(f"{ordinal}, {said} at {ctx.tag(event)}.")
                parts.append(said)
            else:
                steps.append(f"{ordinal}, the {event.label} at {ctx.tag(event)}.")
                parts.append(f"the {event.label}")
        answer = "The recording holds " + ", then ".join(parts) + "."
        return QASample("summary", question, TACoTResponse(tuple(Step(s) for s in steps), answer))


def _key(sample: QASample) -> tuple[str, frozenset[Span]]:
    """What makes a question new: its type and the events its chain cites (wording and option order
    aside, two questions citing the same events ask the same thing)."""
    return sample.question_type, frozenset(sample.evidence)


def shared_seconds(a: Event, b: Event) -> float:
    """Seconds ``a`` and ``b`` overlap (0 when they do not)."""
    return max(0.0, a.overlap(b))


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _onset(event: Event) -> float:
    return event.onset


def _length(event: Event) -> float:
    return event.duration
