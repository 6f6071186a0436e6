"""The TACoT text format: ``<think>`` chains whose steps cite audio spans as ``<t>START-END</t>``.

A Think-mode response (the schema is documented with examples in ``docs/tacot.md``)::

    <think>
    The low tone is heard at <t>1.2-2.05</t>.
    The melody starts later, at <t>3.5-6</t>.
    </think>
    (A) low tone

* ``<think>`` and ``</think>`` each appear once; the chain between them is one step per non-empty line.
* Every step cites at least one span ``<t>START-END</t>``: seconds from the start of the audio, decimals
  allowed, ``0 <= START <= END <= duration``.
* The final answer is the non-empty text after ``</think>`` (it may cite spans too).

Timestamped captions and diarization turns use the same tag, one item per line::

    <t>0-4.5</t> A dog barks twice.                 (caption)
    <t>4.5-7.25</t> Anna: Open the red door.         (turn: speaker, colon, words)

:func:`parse_response` turns text into structured steps with their spans (raising :class:`FormatError` on
text it cannot read); :func:`validate_response` reports every problem with its character offset;
:meth:`TACoTResponse.render` renders back, and ``parse_response(r.render()) == r``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from afnext.errors import FormatError

__all__ = [
    "ISSUE_CODES",
    "SPAN_CLOSE",
    "SPAN_OPEN",
    "THINK_CLOSE",
    "THINK_OPEN",
    "Caption",
    "Issue",
    "Span",
    "Step",
    "TACoTResponse",
    "Turn",
    "format_seconds",
    "parse_captions",
    "parse_response",
    "parse_turns",
    "render_captions",
    "render_turns",
    "spans_in",
    "validate_response",
]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPAN_OPEN, SPAN_CLOSE = "<t>", "</t>"
# Every tag the format knows, in the order the tokenizer below tries them.
_TAG_RE = re.compile(r"</?think>|</?t>")
_NUMBER = r"\d+(?:\.\d+)?|\.\d+"
_SPAN_BODY_RE = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*")
_SPAN_RE = re.compile(r"<t>(.*?)</t>", re.DOTALL)

ISSUE_CODES = (
    "missing_think",  # no <think> block although one is required
    "unclosed_think",  # <think> without </think>
    "unopened_think",  # </think> without <think>
    "duplicate_think",  # a second <think> block
    "unclosed_span",  # <t> without </t>
    "unopened_span",  # </t> without <t>
    "nested_tag",  # <t> inside <t>
    "bad_span",  # the text between <t> and </t> is not START-END
    "start_after_end",  # START > END
    "span_past_end",  # END > the audio's duration
    "empty_think",  # no step inside <think> ... </think>
    "step_without_span",  # a step cites no span
    "missing_answer",  # nothing after </think>
)


def format_seconds(value: float) -> str:
    """Render seconds the way spans are written: at most 3 decimals, no trailing zeros (``2.5``, ``12``)."""
    text = f"{round(float(value), 3):.3f}".rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True)
class Span:
    """A time span in seconds; values are kept to the millisecond so rendering round-trips exactly.

    Attributes:
        start: Onset in seconds.
        end: Offset in seconds.
    """

    start: float
    end: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", round(float(self.start), 3))
        object.__setattr__(self, "end", round(float(self.end), 3))

    @property
    def duration(self) -> float:
        return self.end - self.start

    def tag(self) -> str:
        """The span as a tag: ``<t>1.2-3.45</t>``."""
        return f"{SPAN_OPEN}{format_seconds(self.start)}-{format_seconds(self.end)}{SPAN_CLOSE}"

    def overlap(self, start: float, end: float) -> float:
        """Seconds this span shares with ``[start, end]`` (0 when disjoint)."""
        return max(0.0, min(self.end, end) - max(self.start, start))

    def iou(self, start: float, end: float) -> float:
        """Intersection over union with ``[start, end]``; two equal zero-length spans score 1."""
        inter = self.overlap(start, end)
        union = max(self.end, end) - min(self.start, start)
        if union <= 0:
            return 1.0 if (self.start, self.end) == (start, end) else 0.0
        return inter / union


def spans_in(text: str) -> tuple[Span, ...]:
    """Every well-formed span cited in ``text``, in order (malformed ones are the validator's business)."""
    spans = []
    for match in _SPAN_RE.finditer(text):
        body = _SPAN_BODY_RE.fullmatch(match.group(1))
        if body:
            spans.append(Span(float(body.group(1)), float(body.group(2))))
    return tuple(spans)


@dataclass(frozen=True)
class Step:
    """One reasoning step: a line of text whose ``<t>`` tags cite the spans it rests on.

    Attributes:
        text: The step as written, tags included, without the line break.
        offset: Character offset of the step in the text it was parsed from (-1 when built in code).
    """

    text: str
    offset: int = field(default=-1, compare=False)

    def __post_init__(self) -> None:
        if "\n" in self.text or not self.text.strip() or self.text != self.text.strip():
            raise FormatError(
                f"a TACoT step must be one non-empty line without surrounding spaces, got {self.text!r}"
            )
        if THINK_OPEN in self.text or THINK_CLOSE in self.text:
            raise FormatError(f"a TACoT step cannot hold <think> or </think>, got {self.text!r}")

    @property
    def spans(self) -> tuple[Span, ...]:
        """The spans this step cites, in order."""
        return spans_in(self.text)


@dataclass(frozen=True)
class TACoTResponse:
    """A parsed response: the chain (empty for Instruct answers) and the final answer.

    Attributes:
        steps: The reasoning steps inside ``<think>``; empty when ``think`` is False.
        answer: The final answer after ``</think>`` (or the whole text without a think block).
        think: Whether the response has a ``<think>`` block.
    """

    steps: tuple[Step, ...]
    answer: str
    think: bool = True

    def __post_init__(self) -> None:
        if (
            self.answer != self.answer.strip()
            or THINK_OPEN in self.answer
            or THINK_CLOSE in self.answer
        ):
            raise FormatError(
                f"a TACoT answer has no surrounding spaces and no think tags, got {self.answer!r}"
            )
        if self.steps and not self.think:
            raise FormatError("a response without a <think> block has no steps; set think=True")

    def render(self) -> str:
        """The canonical text: ``<think>``, one step per line, ``</think>``, the answer."""
        if not self.think:
            return self.answer
        body = "\n".join(step.text for step in self.steps)
        return f"{THINK_OPEN}\n{body}\n{THINK_CLOSE}\n{self.answer}"

    @property
    def spans(self) -> tuple[Span, ...]:
        """Every span cited in the chain, in order."""
        return tuple(span for step in self.steps for span in step.spans)


@dataclass(frozen=True)
class Issue:
    """One problem the validator found.

    Attributes:
        code: One of :data:`ISSUE_CODES`.
        offset: Character offset in the validated text where the problem is.
        message: What is wrong and how to fix it.
    """

    code: str
    offset: int
    message: str

    def __str__(self) -> str:
        return f"offset {self.offset}: {self.code}: {self.message}"


def _check_spans(text: str, duration: float | None, issues: list[Issue]) -> None:
    """Tag balance of ``<t>`` and the numbers inside each span, anywhere in ``text``."""
    open_at: int | None = None
    for match in _TAG_RE.finditer(text):
        tag, pos = match.group(), match.start()
        if tag == SPAN_OPEN:
            if open_at is not None:
                issues.append(
                    Issue("nested_tag", pos, "a <t> opens inside another; close it first")
                )
                issues.append(Issue("unclosed_span", open_at, "this <t> has no </t>"))
            open_at = pos
        elif tag == SPAN_CLOSE:
            if open_at is None:
                issues.append(Issue("unopened_span", pos, "</t> without a <t> before it"))
                continue
            _check_span_body(text[open_at + len(SPAN_OPEN) : pos], open_at, duration, issues)
            open_at = None
        elif open_at is not None:  # a think tag inside a span ends it unclosed
            issues.append(
                Issue("unclosed_span", open_at, "this <t> has no </t> before the next tag")
            )
            open_at = None
    if open_at is not None:
        issues.append(Issue("unclosed_span", open_at, "this <t> has no </t>"))


def _check_span_body(body: str, offset: int, duration: float | None, issues: list[Issue]) -> None:
    match = _SPAN_BODY_RE.fullmatch(body)
    if not match:
        issues.append(
            Issue(
                "bad_span", offset, f"span {body!r} is not START-END in seconds, e.g. <t>1.5-3</t>"
            )
        )
        return
    start, end = float(match.group(1)), float(match.group(2))
    if start > end:
        issues.append(
            Issue("start_after_end", offset, f"span starts at {start} after its end {end}")
        )
    if duration is not None and max(start, end) > duration + 1e-9:
        issues.append(
            Issue(
                "span_past_end",
                offset,
                f"span ends at {max(start, end)} s, past the audio's end ({duration} s)",
            )
        )


def _think_bounds(text: str, issues: list[Issue]) -> tuple[int, int] | None:
    """Offsets of the first ``<think>`` and its ``</think>``; records balance problems."""
    opens = [m.start() for m in re.finditer(re.escape(THINK_OPEN), text)]
    closes = [m.start() for m in re.finditer(re.escape(THINK_CLOSE), text)]
    if not opens:
        for pos in closes:
            issues.append(Issue("unopened_think", pos, "</think> without a <think> before it"))
        return None
    first = opens[0]
    for pos in opens[1:]:
        issues.append(Issue("duplicate_think", pos, "only one <think> block is allowed"))
    for pos in closes:
        if pos < first:
            issues.append(Issue("unopened_think", pos, "</think> without a <think> before it"))
    after = [pos for pos in closes if pos > first]
    if not after:
        issues.append(Issue("unclosed_think", first, "<think> has no </think>; close the chain"))
        return None
    for pos in after[1:]:
        issues.append(Issue("unopened_think", pos, "a second </think>"))
    return first, after[0]


def _step_lines(text: str, start: int, end: int) -> list[tuple[int, str]]:
    """``(offset, stripped line)`` of every non-empty line of ``text[start:end]``."""
    lines = []
    pos = start
    for line in text[start:end].split("\n"):
        stripped = line.strip()
        if stripped:
            lines.append((pos + line.index(stripped[0]), stripped))
        pos += len(line) + 1
    return lines


def validate_response(
    text: str, *, duration: float | None = None, require_think: bool = True
) -> list[Issue]:
    """Every problem in a TACoT response, each with its character offset.

    Args:
        text: The response (what the model wrote after the question).
        duration: The audio's length in seconds; spans ending later are reported. ``None`` skips that check.
        require_think: Report a missing ``<think>`` block (Think mode); with False a response without one
            is a plain Instruct answer and only its spans are checked.

    Returns:
        The issues in offset order; empty when the text is a valid response.
    """
    issues: list[Issue] = []
    _check_spans(text, duration, issues)
    bounds = _think_bounds(text, issues)
    has_think = THINK_OPEN in text or THINK_CLOSE in text
    if bounds is None:
        if require_think and not has_think:
            issues.append(
                Issue("missing_think", 0, "no <think> ... </think> chain before the answer")
            )
        if not has_think and not text.strip():
            issues.append(Issue("missing_answer", 0, "the response is empty"))
    else:
        open_at, close_at = bounds
        lines = _step_lines(text, open_at + len(THINK_OPEN), close_at)
        if not lines:
            issues.append(
                Issue("empty_think", open_at, "the chain has no steps; one step per line")
            )
        for offset, line in lines:
            if not _SPAN_RE.search(line):
                issues.append(
                    Issue(
                        "step_without_span", offset, f"step {line[:40]!r} cites no <t>START-END</t>"
                    )
                )
        tail = close_at + len(THINK_CLOSE)
        if not text[tail:].strip():
            issues.append(Issue("missing_answer", tail, "no final answer after </think>"))
    return sorted(issues, key=lambda issue: (issue.offset, issue.code))


# Issues that make the structure unreadable (the parser refuses); the rest are content problems.
_STRUCTURAL = {
    "unclosed_think",
    "unopened_think",
    "duplicate_think",
    "unclosed_span",
    "unopened_span",
    "nested_tag",
    "bad_span",
}


def parse_response(text: str, *, source: str = "<text>") -> TACoTResponse:
    """Parse a response into steps (with their spans) and the final answer.

    Content problems (a step without a span, a span past the end, ...) are left to
    :func:`validate_response`; only text whose structure cannot be read is refused.

    Args:
        text: The response text.
        source: Where the text came from, for error messages (a file and line).

    Returns:
        The structured response; ``think`` is False when the text has no think block.

    Raises:
        FormatError: Tags are unbalanced or a span is not ``START-END``; names ``source`` and the offset.
    """
    issues = [i for i in validate_response(text, require_think=False) if i.code in _STRUCTURAL]
    if issues:
        listed = "; ".join(str(i) for i in issues)
        raise FormatError(f"{source}: not a TACoT response: {listed}")
    bounds = _think_bounds(text, [])
    if bounds is None:
        return TACoTResponse(steps=(), answer=text.strip(), think=False)
    open_at, close_at = bounds
    lines = _step_lines(text, open_at + len(THINK_OPEN), close_at)
    steps = tuple(Step(line, offset) for offset, line in lines)
    return TACoTResponse(
        steps=steps, answer=text[close_at + len(THINK_CLOSE) :].strip(), think=True
    )


@dataclass(frozen=True)
class Caption:
    """A timestamped caption line: ``<t>START-END</t> text``."""

    span: Span
    text: str


@dataclass(frozen=True)
class Turn:
    """A diarization turn: ``<t>START-END</t> speaker: words``."""

    span: Span
    speaker: str
    text: str


_LINE_RE = re.compile(rf"<t>\s*({_NUMBER})\s*-\s*({_NUMBER})\s*</t>\s*(.*)")


def _parse_tagged_lines(text: str, source: str, kind: str) -> list[tuple[int, Span, str]]:
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _LINE_RE.fullmatch(line.strip())
        if not match:
            raise FormatError(
                f"{source}:{number}: a {kind} line must read '<t>START-END</t> ...', got {line!r}"
            )
        start, end = float(match.group(1)), float(match.group(2))
        if start > end:
            raise FormatError(f"{source}:{number}: span starts at {start} after its end {end}")
        items.append((number, Span(start, end), match.group(3).strip()))
    return items


def render_captions(captions: list[Caption]) -> str:
    """One ``<t>START-END</t> text`` line per caption."""
    return "\n".join(f"{c.span.tag()} {c.text}" for c in captions)


def parse_captions(text: str, *, source: str = "<text>") -> list[Caption]:
    """Parse caption lines written by :func:`render_captions`.

    Raises:
        FormatError: A line is not a tagged caption; names ``source`` and the line number.
    """
    return [Caption(span, body) for _, span, body in _parse_tagged_lines(text, source, "caption")]


def render_turns(turns: list[Turn]) -> str:
    """One ``<t>START-END</t> speaker: words`` line per turn."""
    return "\n".join(f"{t.span.tag()} {t.speaker}: {t.text}" for t in turns)


def parse_turns(text: str, *, source: str = "<text>") -> list[Turn]:
    """Parse diarization turns written by :func:`render_turns`.

    Raises:
        FormatError: A line is not ``<t>START-END</t> speaker: words``; names ``source`` and the line.
    """
    turns = []
    for number, span, body in _parse_tagged_lines(text, source, "turn"):
        speaker, sep, words = body.partition(":")
        if not sep or not speaker.strip():
            raise FormatError(
                f"{source}:{number}: a turn needs 'speaker: words' after the span, got {body!r}"
            )
        turns.append(Turn(span, speaker.strip(), words.strip()))
    return turns
