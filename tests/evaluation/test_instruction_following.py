"""MMAU-Pro instruction-following checks: each constraint passes and fails where NeMo-Skills' evaluator rules
say, with its quirks (counting rules, defaults for missing arguments, unknown constraints fail)."""

from __future__ import annotations

import json
import re

import pytest

from afnext.errors import DataError
from afnext.evaluation.metrics.instruction_following import CONSTRAINTS, follows_instruction

# (constraint, kwargs, response that meets it, response that does not)
CASES = [
    ("Include Keywords", {"keywords": "rain, Thunder"}, "Rain and thunder.", "Only rain here."),
    ("Keyword Frequency", {"keyword": "bird", "N": 2}, "A bird, then a Bird.", "A bird and birds."),
    ("Forbidden Words", {"forbidden_words": "dog, cat"}, "A horse neighs.", "A Cat meows."),
    ("Number Paragraphs", {"N": 2}, "One.\n***\nTwo.", "One.\n***\nTwo.\n***\nThree."),
    ("Number Words (at least)", {"N": 3}, "one two three", "one two"),
    ("Number Words (at most)", {"N": 2}, "one two", "one two three"),
    ("Number Words (range)", {"N1": 2, "N2": 3}, "one two three", "one"),
    ("Number Sentences (at least)", {"N": 2}, "Hi... there", "Hi there!?"),
    ("Number Sentences (at most)", {"N": 1}, "Hi there?!", "Hi. Bye."),
    ("Number Sentences (range)", {"N1": 2, "N2": 2}, "A. B?", "A. B. C."),
    ("Postscript", {"postscript_marker": "P.S."}, "Done.\nps: more", "Done."),
    ("Number Placeholder", {"N": 2}, "Call [name] at [place].", "Call [name]."),
    ("Number Bullets", {"N": 2}, "* one\n* two", "* one\n*two\n- three"),
    ("Title", {}, "<<A Storm>>\nRain.", "<>A Storm"),
    ("Minimum Number Highlighted Section", {"N": 2}, "*a* and *b*", "*a* and b"),
    ("Multiple Sections", {"N": 2, "section_splitter": "SECTION"}, "SECTION 1 x SECTION 2 y", "x"),
    ("Two Responses", {}, "Rain.\n******\nA storm.", "Rain.\n******\nrain."),
    ("All Uppercase", {}, "A LOUD BANG!", "A loud BANG"),
    ("All Lowercase", {}, "a quiet hum.", "a Quiet hum"),
    ("All-capital Words (at least)", {"N": 2}, "VERY LOUD noise", "VERY loud noise"),
    ("All-capital Words (at most)", {"N": 1}, "VERY loud noise", "VERY LOUD noise"),
    ("All-capital Words (range)", {"N1": 1, "N2": 2}, "A LOUD noise", "no capitals"),
    ("Start Checker", {"start_phrase": "Well,"}, "well... it rains", "It rains, well"),
    ("End Checker", {"end_phrase": "the end"}, "That is THE END!", "The end is near"),
    ("Quotation", {}, ' "It rains." ', "It rains."),
    ("No Commas", {}, "Rain falls softly.", "Rain, then thunder."),
]


def test_every_constraint_has_a_case():
    assert {case[0] for case in CASES} | {"Repeat Prompt"} == set(CONSTRAINTS)


@pytest.mark.parametrize(("name", "kwargs", "good", "bad"), CASES, ids=[c[0] for c in CASES])
def test_constraint_passes_and_fails(name, kwargs, good, bad):
    record = {"task_identifier": name, "kwargs": kwargs}
    assert follows_instruction(good, record) is True
    assert follows_instruction(bad, record) is False


def test_repeat_prompt_reads_the_transcription_and_the_response_is_stripped():
    record = {"task_identifier": "Repeat Prompt", "kwargs": {}, "prompt_transcription": " Say It "}
    assert follows_instruction("  say it twice", record)
    assert not follows_instruction("I say it", record)


def test_quirks_kept_from_the_reference_rules():
    # an empty response fails every constraint, even one it would meet
    assert not follows_instruction("   ", {"task_identifier": "No Commas", "kwargs": {}})
    # an unknown constraint fails
    assert not follows_instruction("fine", {"task_identifier": "Rhymes", "kwargs": {}})
    # no forbidden_words given: the empty word is in every text, so the check fails
    assert not follows_instruction("fine", {"task_identifier": "Forbidden Words", "kwargs": {}})
    # keywords are split at ", " only: "rain,thunder" is one keyword
    keywords = {"task_identifier": "Include Keywords", "kwargs": {"keywords": "rain,thunder"}}
    assert not follows_instruction("rain and thunder", keywords)
    # a bullet needs whitespace after its star; a highlighted section is any *text* (bullets count too)
    bullets = {"task_identifier": "Number Bullets", "kwargs": {"N": 1}}
    assert follows_instruction("*\tone\n**bold**", bullets)


def test_kwargs_as_parquet_structs_and_json_text():
    # a parquet struct column holds every key, null where the question does not use it; the nulls a check does
    # not read change nothing
    record = {"task_identifier": "Number Words (range)", "kwargs": {"N": None, "N1": 2, "N2": 3}}
    assert follows_instruction("one two", record)
    # a null the check reads stays null, as the reference reads it: `==` with it is false ...
    assert not follows_instruction(
        "* a", {"task_identifier": "Number Bullets", "kwargs": {"N": None}}
    )
    # ... and any other use is an error naming the constraint (where the reference stops)
    for name, kwargs in [
        ("Number Words (range)", {"N1": 1, "N2": None}),
        ("Include Keywords", {"keywords": None}),
        ("Start Checker", {"start_phrase": None}),
        ("Number Words (at least)", {"N": "3"}),  # a number written as text
    ]:
        with pytest.raises(DataError, match=rf"constraint '{re.escape(name)}' cannot be checked"):
            follows_instruction("one two", {"task_identifier": name, "kwargs": kwargs})
    as_text = {"task_identifier": "Number Words (at least)", "kwargs": json.dumps({"N": 2})}
    assert follows_instruction("one two", as_text) and not follows_instruction("one", as_text)
    assert follows_instruction("A", {"task_identifier": "All Uppercase", "kwargs": None})
    listed = {"task_identifier": "Include Keywords", "kwargs": {"keywords": ["rain", "wind"]}}
    assert follows_instruction("Wind and rain", listed)
    with pytest.raises(DataError, match="kwargs is not JSON"):
        follows_instruction("x", {"task_identifier": "Title", "kwargs": "{N: 2"})
    with pytest.raises(DataError, match="kwargs must be a mapping"):
        follows_instruction("x", {"task_identifier": "Title", "kwargs": [1, 2]})
