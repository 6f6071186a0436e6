"""Shared checks for the reasoning tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import soundfile as sf

from afnext.reasoning.format import validate_response

SPLITS = ("train", "val", "test")


def _lines(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


def check_manifest_contract(out: Path, mode: str = "think") -> dict[str, list[dict]]:
    """The manifest contract every consumer relies on."""
    lines = {split: _lines(out, split) for split in SPLITS}
    audio_by_split = {split: {line["sound"] for line in ls} for split, ls in lines.items()}
    assert not audio_by_split["train"] & audio_by_split["val"]
    assert not audio_by_split["train"] & audio_by_split["test"]
    assert not audio_by_split["val"] & audio_by_split["test"]
    for split, ls in lines.items():
        for line in ls:
            assert {
                "id",
                "sound",
                "duration",
                "conversations",
                "timeline",
                "question_type",
                "answer",
            } <= set(line)
            assert line["split"] == split
            info = sf.info(str(out / line["sound"]))
            assert (info.samplerate, info.channels) == (16000, 1)
            assert abs(info.duration - line["duration"]) < 1e-3
            human, gpt = line["conversations"]
            assert human["from"] == "human" and human["value"].startswith("<sound>\n")
            assert gpt["from"] == "gpt"
            if line["mode"] == "think":
                assert gpt["value"].startswith("<think>\n")
                assert gpt["value"].endswith("</think>\n" + line["answer"])
                assert validate_response(gpt["value"], duration=line["duration"]) == []
            else:
                assert gpt["value"] == line["answer"]
            assert all({"onset", "offset", "label"} <= set(e) for e in line["timeline"])
            assert line["mode"] in (("think", "instruct") if mode == "both" else (mode,))
    return lines


@pytest.fixture
def check_manifest() -> Callable[..., dict[str, list[dict]]]:
    """``check_manifest(out, mode="think")``: assert the manifest contract of a built dataset folder."""
    return check_manifest_contract
