"""Metrics: multiple choice out of free text, span grounding, grounded steps, format validity."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from afnext.errors import DataError, FormatError
from afnext.reasoning.build import build_dataset
from afnext.reasoning.format import Span
from afnext.reasoning.generators.template import TemplateGenerator
from afnext.reasoning.metrics import (
    answer_correct,
    evaluate_files,
    extract_choice,
    final_answer,
    score_outputs,
    span_scores,
)
from afnext.reasoning.sources import SyntheticSource
from afnext.reasoning.timeline import Event, Timeline

CHOICES = ["low tone", "melody", "tone", "noise burst"]


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("(B) melody", 1),
        ("(B)", 1),
        ("The answer is D.", 3),
        ("answer: (b) low tone", 0),  # a lower-case letter is a word, not option B
        ("A melody, I think.", 1),  # the article A is not option A
        ("I'd say B.", 1),
        ("(A) is wrong; the answer is (C)", 2),
        ("Answer: (A) low tone", 0),
        ("C", 2),
        ("B. melody", 1),
        ("D) noise burst", 3),
        ("I think it is the melody, clearly.", 1),
        ("It is the low tone.", 0),  # 'tone' is inside 'low tone': the longer option wins
        ("Either (A) or (B).", None),
        ("No idea.", None),
        ("the melody or the noise burst", None),
    ],
)
def test_extract_choice(text: str, index: int | None) -> None:
    assert extract_choice(text, CHOICES) == index


def test_final_answer_and_correctness() -> None:
    assert final_answer("<think>\nx <t>1-2</t>\n</think>\n(B) melody") == "(B) melody"
    assert final_answer("<think>\nnever closed (B)") == ""
    assert final_answer("  (B) melody ") == "(B) melody"
    assert answer_correct("I'd say B.", "(B) melody", CHOICES)
    assert answer_correct("the melody", "(B) melody", CHOICES)
    assert not answer_correct("(C) tone", "(B) melody", CHOICES)
    assert answer_correct("It happens 3 times.", "3")
    assert not answer_correct("It happens 4 times.", "3")
    assert answer_correct("about 2.6 s", "2.5 seconds") and not answer_correct(
        "3.1 s", "2.5 seconds"
    )
    assert answer_correct("Yes, they overlap.", "yes") and not answer_correct("No.", "yes")
    assert answer_correct("That is Anna speaking.", "Anna") and not answer_correct(
        "Annabel", "Anna"
    )
    with pytest.raises(DataError, match="picks none of the options"):
        answer_correct("x", "(Z) nothing", CHOICES)


def test_span_scores() -> None:
    timeline = Timeline((Event(0, 2, "a"), Event(4, 6, "b")), duration=10)
    cited = [Span(0, 2), Span(4, 5), Span(8, 9)]
    scores = span_scores(cited, timeline, [(0, 2), (4, 6)], iou=0.5)
    assert scores == {
        "cited": 3,
        "cited_matched": 2,
        "iou_sum": 1.5,
        "evidence": 2,
        "evidence_matched": 2,
    }


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ds")
    source = SyntheticSource(num_scenes=10, seed=2, speech="off", max_duration=6, overlap_prob=0.3)
    build_dataset(
        TemplateGenerator(),
        source,
        str(out),
        seed=2,
        splits={"train": 0.0, "val": 0.0, "test": 1.0},
    )
    return [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]


def _perfect(manifest: list[dict]) -> dict[str, str]:
    return {line["id"]: line["conversations"][1]["value"] for line in manifest}


def test_reference_outputs_score_perfectly(manifest: list[dict]) -> None:
    scores = score_outputs(_perfect(manifest), manifest)
    assert scores["overall"] == {
        "samples": len(manifest),
        "accuracy": 1.0,
        "format_validity": 1.0,
        "span_precision": 1.0,
        "span_recall": 1.0,
        "span_iou": 1.0,
        "steps_grounded": 1.0,
    }
    assert scores["missing"] == 0
    assert set(scores["by_question_type"]) == {line["question_type"] for line in manifest}


def test_degraded_outputs_score_lower(manifest: list[dict]) -> None:
    def shift(match: re.Match) -> str:
        return f"<t>{float(match.group(1)) + 0.3:g}-{float(match.group(2)) + 0.3:g}</t>"

    shifted = {
        i: re.sub(r"<t>([\d.]+)-([\d.]+)</t>", shift, text)
        for i, text in _perfect(manifest).items()
    }
    scores = score_outputs(shifted, manifest)["overall"]
    assert scores["accuracy"] == 1.0
    assert 0 < scores["span_iou"] < 1.0 and scores["span_precision"] < 1.0
    answers_only = {line["id"]: line["answer"] for line in manifest}
    plain = score_outputs(answers_only, manifest)["overall"]
    assert (
        plain["accuracy"] == 1.0
        and plain["format_validity"] == 0.0
        and plain["span_precision"] is None
    )
    wrong = {
        line["id"]: "<think>\nNothing at <t>0-0.01</t>.\n</think>\nZZZ" for line in manifest[:4]
    }
    partial = score_outputs(wrong, manifest)
    assert partial["overall"]["accuracy"] == 0.0 and partial["missing"] == len(manifest) - 4
    assert (
        partial["overall"]["steps_grounded"] == 0.0 and partial["overall"]["format_validity"] == 1.0
    )


def test_files_and_command_line(manifest: list[dict], tmp_path: Path) -> None:
    manifest_path = tmp_path / "test.jsonl"
    manifest_path.write_text("".join(json.dumps(line) + "\n" for line in manifest))
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text(
        "".join(
            json.dumps({"id": i, "prediction": o}) + "\n" for i, o in _perfect(manifest).items()
        )
    )
    assert evaluate_files(predictions, manifest_path)["overall"]["accuracy"] == 1.0
    proc = subprocess.run(
        [sys.executable, "-m", "afnext.reasoning.metrics", str(predictions), str(manifest_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert json.loads(proc.stdout)["overall"]["format_validity"] == 1.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "output": "a"}\n{"output": "no id"}\n')
    with pytest.raises(FormatError, match=r"bad\.jsonl:2: needs 'id'"):
        evaluate_files(bad, manifest_path)
    bad.write_text('{"id": "x", "output": "a"}\nnot json\n')
    with pytest.raises(FormatError, match=r"bad\.jsonl:2: invalid JSON"):
        evaluate_files(bad, manifest_path)
    bad.write_text('{"id": "nope", "output": "a"}\n')
    with pytest.raises(DataError, match="ids not in the manifest"):
        evaluate_files(bad, manifest_path)
