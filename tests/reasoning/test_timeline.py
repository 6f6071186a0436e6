"""Timelines: validation, the manifest form, merging and speaker assignment."""

from __future__ import annotations

import pytest

from afnext.errors import FormatError
from afnext.reasoning.timeline import Event, Timeline, Word


def test_events_are_sorted_and_vocabularies_filled() -> None:
    timeline = Timeline(
        (
            Event(3, 4, "melody", kind="music"),
            Event(0.5, 1, "dog"),
            Event(1, 2, "speech", kind="speech", speaker="Ann", text="hi"),
        ),
        duration=5,
        labels=("cat",),
    )
    assert [e.label for e in timeline.events] == ["dog", "speech", "melody"]
    assert timeline.labels == ("cat", "dog", "melody", "speech")
    assert timeline.speakers == ("Ann",)
    assert timeline.with_label("dog") == (Event(0.5, 1, "dog"),)


def test_manifest_form_round_trips() -> None:
    words = (Word(1.0, 1.4, "hello"), Word(1.5, 2.0, "there"))
    timeline = Timeline(
        (
            Event(1, 2, "speech", kind="speech", speaker="A", text="hello there", words=words),
            Event(0, 1, "x"),
        ),
        duration=3,
    )
    listed = timeline.to_list()
    assert listed[0] == {"onset": 0, "offset": 1, "label": "x", "kind": "sound"}
    assert listed[1]["words"][1] == {"start": 1.5, "end": 2.0, "text": "there"}
    assert Timeline.from_list(listed, duration=3).events == timeline.events


@pytest.mark.parametrize(
    ("event", "match"),
    [
        ({"onset": 1, "label": "x"}, r"m\.json\[0\]: event is missing key 'offset'"),
        ({"onset": "soon", "offset": 2, "label": "x"}, r"m\.json\[0\]: bad event"),
        ({"onset": 2, "offset": 1, "label": "x"}, "need 0 <= onset <= offset"),
        ({"onset": 0, "offset": 1, "label": "x", "kind": "noise"}, "event kind 'noise'"),
    ],
)
def test_bad_events_are_named(event: dict, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        Timeline.from_list([event], source="m.json")


def test_event_past_the_end_is_an_error() -> None:
    with pytest.raises(FormatError, match="ends at 6 s, past the audio's duration 5"):
        Timeline((Event(4, 6, "x"),), duration=5, source="a.tsv")


def test_merge_and_assign_speakers() -> None:
    events = Timeline((Event(0, 2, "dog"),), source="a.tsv")
    transcript = Timeline(
        (
            Event(2, 4, "speech", kind="speech", text="hi"),
            Event(5, 6, "speech", kind="speech", text="yo"),
        ),
        duration=7,
        source="a.json",
    )
    turns = [
        Event(1.8, 4.2, "speech", kind="speech", speaker="S1"),
        Event(4.9, 6, "speech", kind="speech", speaker="S2"),
    ]
    merged = events.merge(transcript.assign_speakers(turns))
    assert merged.duration == 7
    assert [e.speaker for e in merged.events] == [None, "S1", "S2"]
    assert merged.source == "a.tsv + a.json"
