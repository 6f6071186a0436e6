"""AF3-style manifests: records, resolved paths, roles, and every malformed line named by file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afnext.data.manifest import ManifestProblem, ManifestRecord, load_manifest, read_manifest
from afnext.errors import DataError


def _write_lines(path: Path, lines: list[object | str]) -> Path:
    """Write JSONL; a ``str`` item is written verbatim (to plant malformed lines)."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": who, "value": value} for who, value in pairs]


def test_records_roles_paths_and_defaults(tmp_path):
    manifest = _write_lines(
        tmp_path / "m.jsonl",
        [
            {
                "id": "a",
                "sound": "audio/a.wav",
                "duration": 1.5,
                "answer": "B",
                "conversations": _turns(("human", "<sound>\nWhat?"), ("gpt", "A dog.")),
            },
            {
                "sound": ["x.wav", "/abs/y.wav"],
                "conversations": _turns(
                    ("system", "Be brief."), ("human", "<sound> vs <sound>?"), ("gpt", "Same.")
                ),
            },
            "",  # blank lines are ignored but still counted
            {
                "conversations": _turns(
                    ("human", "Hi"), ("gpt", "Hello"), ("human", "Bye"), ("gpt", "Bye!")
                )
            },
        ],
    )
    entries = read_manifest(manifest)
    assert all(isinstance(e, ManifestRecord) for e in entries)
    a, two, text = entries
    assert a.id == "a" and a.duration == 1.5 and a.line == 1
    assert a.sounds == (str(tmp_path / "audio" / "a.wav"),)
    assert a.messages == (
        {"role": "user", "content": "<sound>\nWhat?"},
        {"role": "assistant", "content": "A dog."},
    )
    assert a.extra == {"answer": "B"}
    assert a.where == f"{manifest}:1"
    assert two.id == "m.jsonl:2" and two.duration is None
    assert two.sounds == (str(tmp_path / "x.wav"), "/abs/y.wav")
    assert [m["role"] for m in two.messages] == ["system", "user", "assistant"]
    assert text.line == 4 and text.sounds == ()
    assert [m["role"] for m in text.messages] == ["user", "assistant", "user", "assistant"]


def test_each_problem_names_file_line_and_reason(tmp_path):
    ok = {"sound": "a.wav", "conversations": _turns(("human", "<sound>Q"), ("gpt", "A"))}
    manifest = _write_lines(
        tmp_path / "bad.jsonl",
        [
            ok,
            '{"sound": "a.wav", "conversations": [',  # malformed JSON
            {"sound": "a.wav"},  # no conversations
            {"sound": "a.wav", "conversations": _turns(("human", "<sound>Q"), ("bot", "A"))},
            {
                "sound": ["a.wav", "b.wav"],
                "conversations": _turns(("human", "<sound>Q"), ("gpt", "A")),
            },
            {"conversations": _turns(("human", "<sound>Q"), ("gpt", "A"))},  # slot, no sound
            {"sound": "a.wav", "duration": "long", "conversations": ok["conversations"]},
            "[1, 2]",
        ],
    )
    entries = read_manifest(manifest)
    assert isinstance(entries[0], ManifestRecord)
    problems = entries[1:]
    assert all(isinstance(p, ManifestProblem) for p in problems)
    assert [(p.line, p.reason) for p in problems] == [
        (2, "malformed_json"),
        (3, "bad_record"),
        (4, "bad_record"),
        (5, "placeholder_mismatch"),
        (6, "placeholder_mismatch"),
        (7, "bad_record"),
        (8, "bad_record"),
    ]
    assert problems[0].where == f"{manifest}:2"
    assert "conversations" in problems[1].message
    assert "'bot'" in problems[2].message
    assert "1 <sound> placeholders but 'sound' names 2 files" in problems[3].message
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        load_manifest(manifest)


def test_json_list_keeps_line_numbers(tmp_path):
    good = {"sound": "a.wav", "conversations": _turns(("human", "<sound>Q"), ("gpt", "A"))}
    path = tmp_path / "list.json"
    path.write_text(json.dumps([good, {"sound": "a.wav"}, good], indent=2))
    entries = read_manifest(path)
    assert [type(e).__name__ for e in entries] == [
        "ManifestRecord",
        "ManifestProblem",
        "ManifestRecord",
    ]
    text = path.read_text().splitlines()
    for entry in entries:
        assert text[entry.line - 1].strip() == "{"  # each item's line is where its object starts
    assert entries[0].line < entries[1].line < entries[2].line

    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"sound": "a.wav",\n   "conversations": [}\n]')
    (problem,) = read_manifest(broken)
    assert problem.reason == "malformed_json" and problem.line == 3

    not_list = tmp_path / "obj.json"
    not_list.write_text("{}")
    assert read_manifest(not_list)[0].reason == "malformed_json"


def test_missing_manifest_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such manifest"):
        read_manifest(tmp_path / "nope.jsonl")
