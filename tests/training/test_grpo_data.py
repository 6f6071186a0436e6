"""GRPO data: ``afnext data build ... mode=grpo`` writes prompts with what the rewards need, and AF3-style lines
(with or without an ``answer`` field) give the rewards their reference as they are."""

from __future__ import annotations

import json

from afnext.data.manifest import load_manifest
from afnext.reasoning.build import build_dataset
from afnext.reasoning.generators.template import TemplateGenerator
from afnext.reasoning.sources import SyntheticSource
from afnext.training.rewards import AccuracyReward, GroundingReward, RewardSample


def test_mode_grpo_writes_prompts_with_answers_and_timelines(tmp_path):
    report = build_dataset(
        TemplateGenerator(question_types=["after", "count"], choices=0, samples_per_timeline=2),
        SyntheticSource(num_scenes=6, seed=0, min_duration=4, max_duration=6, speech="off"),
        out=str(tmp_path),
        mode="grpo",
        splits={"train": 1.0},
    )
    assert report.samples["train"] > 0
    lines = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    for line in lines:
        assert [t["from"] for t in line["conversations"]] == ["human"]  # no reference turn
        assert line["mode"] == "grpo" and line["answer"] and line["timeline"] and line["evidence"]
    assert "GRPO prompt; answer:" in (tmp_path / "preview.md").read_text()
    records = load_manifest(tmp_path / "train.jsonl")
    sample = RewardSample.from_record(records[0])
    assert sample.answer == lines[0]["answer"] and sample.question.startswith("<sound>")
    assert sample.sounds and sample.sounds[0].endswith(".wav")
    assert AccuracyReward()(sample, lines[0]["answer"]) == 1.0
    cited = "".join(f"<t>{a}-{b}</t>" for a, b in lines[0]["evidence"])
    assert GroundingReward()(sample, f"<think>\nthe events {cited}\n</think>\nx") == 1.0


def test_af3_lines_give_their_answer_field_or_their_answer_turn(tmp_path):
    rows = [
        {"id": "a", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "(B) dog"}],
         "answer": "(B) dog", "choices": ["cat", "dog"]},
        {"id": "b", "conversations": [{"from": "human", "value": "Count?"}, {"from": "gpt", "value": "3"}]},
    ]  # fmt: skip
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = (RewardSample.from_record(r) for r in load_manifest(path))
    assert (first.answer, first.choices, first.question) == ("(B) dog", ("cat", "dog"), "Hi?")
    assert second.answer == "3" and second.timeline is None
    assert AccuracyReward()(first, "B") == 1.0 and AccuracyReward()(second, "three? no, 3") == 1.0
