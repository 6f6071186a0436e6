"""TACoT format: rendering and parsing round-trip; the validator catches each malformed case."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afnext.errors import FormatError
from afnext.reasoning.format import (
    Caption,
    Span,
    Step,
    TACoTResponse,
    Turn,
    format_seconds,
    parse_captions,
    parse_response,
    parse_turns,
    render_captions,
    render_turns,
    validate_response,
)

# Words without tag characters or line breaks; steps and answers are built from them.
_word = st.text(
    alphabet=st.characters(
        min_codepoint=33,
        max_codepoint=0x17F,
        blacklist_categories=("Cc", "Zs"),
        blacklist_characters="<>:",
    ),
    min_size=1,
    max_size=8,
)
_words = st.lists(_word, min_size=0, max_size=5).map(" ".join)
_ms = st.integers(min_value=0, max_value=1_800_000)


@st.composite
def spans(draw: st.DrawFn) -> Span:
    a, b = draw(_ms), draw(_ms)
    return Span(min(a, b) / 1000, max(a, b) / 1000)


@st.composite
def steps(draw: st.DrawFn) -> Step:
    parts = [draw(_words)]
    for span in draw(st.lists(spans(), min_size=1, max_size=3)):
        parts += [span.tag(), draw(_words)]
    return Step(" ".join(p for p in parts if p))


responses = st.builds(
    TACoTResponse,
    steps=st.lists(steps(), min_size=1, max_size=6).map(tuple),
    answer=st.lists(_word, min_size=1, max_size=6).map(" ".join),
)


@given(responses)
@settings(max_examples=100, deadline=None)
def test_render_then_parse_round_trips(response: TACoTResponse) -> None:
    text = response.render()
    parsed = parse_response(text)
    assert parsed == response
    assert parsed.render() == text
    assert parsed.spans == response.spans
    end = max(s.end for s in response.spans)
    assert validate_response(text, duration=end) == []
    for step in parsed.steps:  # offsets point at the steps in the text
        assert text[step.offset : step.offset + len(step.text)] == step.text


@given(spans())
@settings(deadline=None)
def test_span_tag_round_trips(span: Span) -> None:
    (step,) = parse_response(f"<think>\nat {span.tag()}\n</think>\nok").steps
    assert step.spans == (span,)
    assert float(format_seconds(span.start)) == span.start


def test_parse_accepts_non_canonical_spacing_and_instruct_answers() -> None:
    text = "  <think>  first <t> 1.5 - 2 </t>\n\n   second <t>.5-1</t>   \n</think>   the answer \n"
    parsed = parse_response(text)
    assert [s.spans for s in parsed.steps] == [(Span(1.5, 2),), (Span(0.5, 1),)]
    assert parsed.answer == "the answer"
    plain = parse_response("  (B) melody ")
    assert plain == TACoTResponse((), "(B) melody", think=False)
    assert validate_response("(B) melody", require_think=False) == []


def _offset_of(text: str, needle: str, nth: int = 0) -> int:
    pos = -1
    for _ in range(nth + 1):
        pos = text.index(needle, pos + 1)
    return pos


MUTATIONS = [
    "drop_close_think",
    "drop_open_think",
    "drop_span_close",
    "swap_span",
    "short_audio",
    "step_without_span",
    "drop_answer",
    "bad_span",
    "no_think",
    "duplicate_think",
    "nested_span",
    "stray_span_close",
    "empty_think",
]


@given(responses, st.sampled_from(MUTATIONS), st.data())
@settings(max_examples=150, deadline=None)
def test_validator_catches_each_malformed_case(
    response: TACoTResponse, mutation: str, data: st.DataObject
) -> None:
    text = response.render()
    duration = max(s.end for s in response.spans)
    structural = True
    n_spans = text.count("<t>")
    k = data.draw(st.integers(0, n_spans - 1))
    if mutation == "drop_close_think":
        bad, code, offset = text.replace("</think>", ""), "unclosed_think", 0
    elif mutation == "drop_open_think":
        bad = text.replace("<think>", "", 1)
        code, offset = "unopened_think", bad.index("</think>")
    elif mutation == "drop_span_close":
        at = _offset_of(text, "</t>", k)
        bad, code, offset = text[:at] + text[at + 4 :], "unclosed_span", _offset_of(text, "<t>", k)
    elif mutation == "swap_span":
        span = response.spans[k]
        if span.start == span.end:
            span = Span(span.start, span.start + 1)
            duration = max(duration, span.end)
        at, close = _offset_of(text, "<t>", k), _offset_of(text, "</t>", k)
        swapped = f"<t>{format_seconds(span.end)}-{format_seconds(span.start)}</t>"
        bad, code, offset, structural = (
            text[:at] + swapped + text[close + 4 :],
            "start_after_end",
            at,
            False,
        )
    elif mutation == "short_audio":
        span = response.spans[k]
        bad, code, offset, structural = text, "span_past_end", _offset_of(text, "<t>", k), False
        duration = span.end - 0.001
        if duration < 0:
            return  # a span ending at 0 cannot end past the audio
    elif mutation == "step_without_span":
        i = data.draw(st.integers(0, len(response.steps) - 1))
        steps = [s.text for s in response.steps]
        steps[i] = "a step citing nothing"
        bad = TACoTResponse(tuple(Step(s) for s in steps), response.answer).render()
        code, offset, structural = (
            "step_without_span",
            _offset_of(bad, "a step citing nothing"),
            False,
        )
    elif mutation == "drop_answer":
        bad = text[: text.index("</think>") + len("</think>")] + "\n  "
        code, offset, structural = "missing_answer", text.index("</think>") + len("</think>"), False
    elif mutation == "bad_span":
        at, close = _offset_of(text, "<t>", k), _offset_of(text, "</t>", k)
        bad, code, offset = text[:at] + "<t>soon</t>" + text[close + 4 :], "bad_span", at
    elif mutation == "no_think":
        bad, code, offset, structural = response.answer, "missing_think", 0, False
    elif mutation == "duplicate_think":
        bad = text + "\n<think>\nagain <t>0-1</t>\n</think>\nx"
        code, offset = "duplicate_think", _offset_of(bad, "<think>", 1)
    elif mutation == "nested_span":
        at = _offset_of(text, "<t>", k)
        bad, code, offset = text[: at + 3] + "<t>" + text[at + 3 :], "nested_tag", at + 3
    elif mutation == "stray_span_close":
        bad = text.replace("</think>", "</t></think>")
        code, offset = "unopened_span", bad.index("</t></think>")
    else:  # empty_think
        bad = "<think>\n\n</think>\n" + response.answer
        code, offset, structural = "empty_think", 0, False
    issues = validate_response(bad, duration=duration)
    assert (code, offset) in {(i.code, i.offset) for i in issues}, (bad, issues)
    if structural:
        with pytest.raises(FormatError, match=code):
            parse_response(bad, source="sample.jsonl:7")


def test_parse_error_names_source_and_offset() -> None:
    with pytest.raises(FormatError, match=r"sample\.jsonl:3: .*offset 0: unclosed_think"):
        parse_response("<think>\nx <t>1-2</t>\nanswer", source="sample.jsonl:3")


def test_steps_and_answers_reject_what_cannot_render() -> None:
    with pytest.raises(FormatError):
        Step("two\nlines <t>1-2</t>")
    with pytest.raises(FormatError):
        Step("has </think> inside <t>1-2</t>")
    with pytest.raises(FormatError):
        TACoTResponse((Step("a <t>1-2</t>"),), " padded ")
    with pytest.raises(FormatError):
        TACoTResponse((Step("a <t>1-2</t>"),), "x", think=False)


@settings(deadline=None)
@given(st.lists(st.tuples(spans(), _words.filter(lambda w: w.strip() == w)), max_size=6))
def test_captions_round_trip(items: list[tuple[Span, str]]) -> None:
    captions = [Caption(span, text) for span, text in items]
    assert parse_captions(render_captions(captions)) == captions


@settings(deadline=None)
@given(st.lists(st.tuples(spans(), _word, _words.filter(lambda w: w.strip() == w)), max_size=6))
def test_turns_round_trip(items: list[tuple[Span, str, str]]) -> None:
    turns = [Turn(span, speaker, text) for span, speaker, text in items]
    assert parse_turns(render_turns(turns)) == turns


def test_caption_and_turn_errors_name_the_line() -> None:
    with pytest.raises(FormatError, match=r"caps\.txt:2: a caption line"):
        parse_captions("<t>0-1</t> fine\n[0-1] not a tag", source="caps.txt")
    with pytest.raises(FormatError, match=r"turns\.txt:1: a turn needs 'speaker: words'"):
        parse_turns("<t>0-1</t> no speaker here", source="turns.txt")
    with pytest.raises(FormatError, match=r"turns\.txt:1: span starts at 2.0 after its end 1.0"):
        parse_turns("<t>2-1</t> Anna: hi", source="turns.txt")
