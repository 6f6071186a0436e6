"""Readers on small real-format fixtures, including malformed lines with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afnext.errors import FormatError
from afnext.reasoning.readers import (
    read_event_tsv,
    read_rttm,
    read_srt,
    read_transcript,
    read_vtt,
    read_whisper_json,
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_desed_tsv(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "desed.tsv",
        "filename\tonset\toffset\tevent_label\n"
        "Y00a.wav\t0.5\t2.25\tDog\n"
        "Y00a.wav\t3.0\t9.0\tSpeech\n"
        "Y00b.wav\t\t\t\n"
        "Y00c.wav\t1\t4.5\tVacuum_cleaner\n",
    )
    timelines = read_event_tsv(path)
    assert sorted(timelines) == ["Y00a", "Y00b", "Y00c"]
    assert [(e.onset, e.offset, e.label) for e in timelines["Y00a"].events] == [
        (0.5, 2.25, "Dog"),
        (3.0, 9.0, "Speech"),
    ]
    assert timelines["Y00b"].events == ()
    assert timelines["Y00b"].labels == ("Dog", "Speech", "Vacuum_cleaner")  # the file's vocabulary


def test_audioset_strong_tsv_with_label_map(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "strong.tsv",
        "segment_id\tstart_time_seconds\tend_time_seconds\tlabel\n"
        "YxYz_30000\t0.000\t1.234\t/m/05zppz\n",
    )
    (event,) = read_event_tsv(path, label_map={"/m/05zppz": "Male speech"})["YxYz_30000"].events
    assert (event.onset, event.offset, event.label) == (0.0, 1.234, "Male speech")


def test_headerless_tsv(tmp_path: Path) -> None:
    path = _write(tmp_path, "plain.tsv", "a.wav\t1\t2\tbeep\n")
    assert read_event_tsv(path)["a"].events[0].label == "beep"


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ("a.wav\t1\t2\n", r"bad\.tsv:2: row .* has 3 columns; expected 4 tab-separated"),
        ("a.wav\tone\t2\tdog\n", r"bad\.tsv:2: onset 'one' is not a number of seconds"),
        ("a.wav\t3\t2\tdog\n", r"bad\.tsv:2: offset 2.0 is before onset 3.0; swap them"),
        ("a.wav\t1\t2\t\n", r"bad\.tsv:2: the label column is empty"),
        ("a.wav\t-1\t2\tdog\n", r"bad\.tsv:2: onset '-1' must be a non-negative"),
    ],
)
def test_malformed_tsv(tmp_path: Path, rows: str, match: str) -> None:
    path = _write(tmp_path, "bad.tsv", "filename\tonset\toffset\tevent_label\n" + rows)
    with pytest.raises(FormatError, match=match):
        read_event_tsv(path)


def test_tsv_with_unknown_header(tmp_path: Path) -> None:
    path = _write(tmp_path, "h.tsv", "name\tfrom\tto\twhat\na\t1\t2\tx\n")
    with pytest.raises(FormatError, match=r"h\.tsv:1: header .* has no column among"):
        read_event_tsv(path)


SRT = """1
00:00:01,000 --> 00:00:04,500
<i>Hello there,</i>
general Kenobi.

2
00:00:05,250 --> 00:01:02,000
[SPEAKER_01]: You are a bold one.
"""


def test_srt(tmp_path: Path) -> None:
    timeline = read_srt(_write(tmp_path, "a.srt", SRT), duration=70)
    first, second = timeline.events
    assert (first.onset, first.offset, first.text, first.speaker) == (
        1.0,
        4.5,
        "Hello there, general Kenobi.",
        None,
    )
    assert (second.onset, second.offset, second.speaker, second.text) == (
        5.25,
        62.0,
        "SPEAKER_01",
        "You are a bold one.",
    )
    assert first.kind == "speech" and timeline.duration == 70


def test_malformed_srt(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "bad.srt",
        "1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03 -> 00:00:04\nbad\n",
    )
    with pytest.raises(
        FormatError,
        match=r"bad\.srt:6: expected a timing line like '00:00:01,000 --> 00:00:04,500'",
    ):
        read_srt(path)


VTT = """WEBVTT - a test

NOTE this block is skipped

intro
00:01.000 --> 00:04.000 align:start
<v Anna>Open the <b>red</b> door.

00:00:05.000 --> 00:00:07.000
<00:00:05.000><c>turn</c><00:00:05.600><c> left</c><00:00:06.100><c> now</c>
"""


def test_vtt(tmp_path: Path) -> None:
    first, second = read_vtt(_write(tmp_path, "a.vtt", VTT)).events
    assert (first.onset, first.offset, first.speaker, first.text) == (
        1.0,
        4.0,
        "Anna",
        "Open the red door.",
    )
    assert second.text == "turn left now"
    assert [(w.start, w.end, w.text) for w in second.words] == [
        (5.0, 5.6, "turn"),
        (5.6, 6.1, "left"),
        (6.1, 7.0, "now"),
    ]


def test_malformed_vtt(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"nohead\.vtt:1: a WebVTT file must start with 'WEBVTT'"):
        read_vtt(_write(tmp_path, "nohead.vtt", "00:01.000 --> 00:02.000\nhi\n"))
    bad = _write(
        tmp_path, "bad.vtt", "WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n\ncue-2\n00:03 --> 00:04\nho\n"
    )
    with pytest.raises(FormatError, match=r"bad\.vtt:7: expected a cue timing"):
        read_vtt(bad)


def test_whisper_json_segments_and_words(tmp_path: Path) -> None:
    data = {
        "text": " Hello world. Bye.",
        "segments": [
            {
                "id": 0,
                "start": 0.0,
                "end": 1.5,
                "text": " Hello world.",
                "speaker": "SPEAKER_00",
                "words": [
                    {"word": " Hello", "start": 0.0, "end": 0.6},
                    {"word": " world.", "start": 0.7, "end": 1.5},
                    {"word": "2024"},
                ],
            },
            {"id": 1, "start": 2.0, "end": 2.5, "text": " Bye."},
        ],
    }
    timeline = read_whisper_json(_write(tmp_path, "a.json", json.dumps(data)), duration=3)
    first, second = timeline.events
    assert (first.text, first.speaker) == ("Hello world.", "SPEAKER_00")
    assert [(w.start, w.end, w.text) for w in first.words] == [
        (0.0, 0.6, "Hello"),
        (0.7, 1.5, "world."),
    ]
    assert (second.onset, second.offset, second.words) == (2.0, 2.5, ())


def test_whisper_json_hf_chunks(tmp_path: Path) -> None:
    data = {
        "text": "hi there",
        "chunks": [
            {"text": " hi", "timestamp": [0.0, 0.4]},
            {"text": " there", "timestamp": [0.5, None]},
        ],
    }
    timeline = read_transcript(_write(tmp_path, "b.json", json.dumps(data)), duration=1.0)
    assert [(e.onset, e.offset, e.text) for e in timeline.events] == [
        (0.0, 0.4, "hi"),
        (0.5, 1.0, "there"),
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"segments": [', r"w\.json:1: invalid JSON"),
        ('{"text": "x"}', r"w\.json: expected a JSON object with 'segments'"),
        (
            '{"segments": [{"start": 0, "text": "x"}]}',
            r"w\.json: segments\[0\]: needs numeric 'start' and 'end'",
        ),
        (
            '{"segments": [{"start": 2, "end": 1, "text": "x"}]}',
            r"w\.json: segments\[0\]: end 1.0 is before start",
        ),
        (
            '{"chunks": [{"text": "x", "timestamp": 3}]}',
            r"w\.json: chunks\[0\]: 'timestamp' must be \[start, end\]",
        ),
    ],
)
def test_malformed_whisper_json(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        read_whisper_json(_write(tmp_path, "w.json", text))


def test_rttm(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "a.rttm",
        ";; comment\n"
        "SPKR-INFO meeting1 1 <NA> <NA> <NA> unknown spk1 <NA>\n"
        "SPEAKER meeting1 1 0.50 2.25 <NA> <NA> spk1 <NA> <NA>\n"
        "SPEAKER meeting1 1 3.00 1.00 <NA> <NA> spk2 <NA> <NA>\n"
        "SPEAKER other 1 0 1 <NA> <NA> A <NA> <NA>\n",
    )
    turns = read_rttm(path)
    assert sorted(turns) == ["meeting1", "other"]
    assert [(e.onset, e.offset, e.speaker) for e in turns["meeting1"].events] == [
        (0.5, 2.75, "spk1"),
        (3.0, 4.0, "spk2"),
    ]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (
            "SPEAKER m 1 0.5 2.0 <NA> <NA>",
            r"r\.rttm:1: a SPEAKER line needs at least 8 space-separated fields",
        ),
        ("SPEAKER m 1 zero 2.0 <NA> <NA> s <NA> <NA>", r"r\.rttm:1: onset 'zero' is not a number"),
        (
            "SPEAKER m 1 1.0 -2.0 <NA> <NA> s <NA> <NA>",
            r"r\.rttm:1: duration '-2.0' must be a non-negative number",
        ),
    ],
)
def test_malformed_rttm(tmp_path: Path, line: str, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        read_rttm(_write(tmp_path, "r.rttm", line + "\n"))


def test_unknown_transcript_extension(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"a\.txt: unknown transcript format"):
        read_transcript(_write(tmp_path, "a.txt", "hi"))
