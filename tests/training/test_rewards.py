"""Rewards on hand-made completions: grounding (exact, shifted, outside the audio, no spans), accuracy (MMAU rule,
numbers, yes / no, exact or contained open answers, a judge), TACoT format, the length penalty; a reward that
raises is a counted failure; every conf/reward/ option composes and builds."""

from __future__ import annotations

import json
import logging

import pytest

from afnext.config import compose_config, config_groups
from afnext.errors import ConfigError, DataError
from afnext.training.rewards import (
    AccuracyReward,
    GroundingReward,
    LengthPenalty,
    Reward,
    RewardSample,
    RewardSet,
    TACoTFormatReward,
)

TIMELINE = [
    {"onset": 1.0, "offset": 3.0, "label": "low tone", "kind": "sound"},
    {"onset": 4.0, "offset": 5.0, "label": "melody", "kind": "music"},
    {"onset": 5.0, "offset": 6.0, "label": "silence", "kind": "silence"},
]


def _sample(**kw) -> RewardSample:
    base = {
        "id": "s",
        "answer": "melody",
        "duration": 6.0,
        "timeline": TIMELINE,
        "where": "m.jsonl:1",
    }
    return RewardSample(**{**base, **kw})


def _chain(*spans: str, answer: str = "melody") -> str:
    steps = "\n".join(f"The sound at {s}." for s in spans)
    return f"<think>\n{steps}\n</think>\n{answer}"


def test_grounding_exact_spans_score_one():
    reward = GroundingReward()
    assert reward(_sample(), _chain("<t>1-3</t>", "<t>4-5</t>")) == 1.0


def test_grounding_shifted_spans_score_their_iou():
    reward = GroundingReward()
    # [2, 4] against the low tone [1, 3]: overlap 1, union 3; [4.5, 5.5] against the melody [4, 5]: 0.5 / 1.5.
    assert reward(_sample(), _chain("<t>2-4</t>")) == pytest.approx(1 / 3)
    assert reward(_sample(), _chain("<t>2-4</t>", "<t>4.5-5.5</t>")) == pytest.approx(
        (1 / 3 + 1 / 3) / 2
    )
    assert GroundingReward(min_iou=0.5)(_sample(), _chain("<t>1-3</t>", "<t>2-4</t>")) == 0.5


def test_grounding_spans_outside_the_audio_or_on_silence_score_zero():
    reward = GroundingReward()
    assert reward(_sample(), _chain("<t>1-3</t>", "<t>5-9</t>")) == 0.5  # ends past the 6 s audio
    assert reward(_sample(), _chain("<t>7-8</t>")) == 0.0
    assert (
        reward(_sample(), _chain("<t>5-6</t>")) == 0.0
    )  # silence is not an event a span should cite


def test_grounding_without_spans_gives_no_span():
    assert GroundingReward()(_sample(), "melody") == 0.0
    assert GroundingReward(no_span=-0.5)(_sample(), "<think>\nno span\n</think>\nmelody") == -0.5
    with pytest.raises(DataError, match="timeline"):
        GroundingReward()(_sample(timeline=None), _chain("<t>1-3</t>"))


def test_grounding_reads_a_timeline_file(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps(TIMELINE))
    assert (
        GroundingReward()(_sample(timeline=str(tmp_path / "t.json")), _chain("<t>4-5</t>")) == 1.0
    )


def test_accuracy_multiple_choice_by_the_official_rule():
    reward = AccuracyReward()
    sample = _sample(answer="(B) melody", choices=("low tone", "melody", "noise burst"))
    assert reward(sample, "(B)") == 1.0
    assert reward(sample, "<think>\nmaybe the low tone <t>1-3</t>\n</think>\nB. melody") == 1.0
    assert reward(sample, "melody") == 1.0
    assert reward(sample, "melody or noise burst") == 0.0  # names a distractor
    assert (
        reward(sample, "<think>\nmelody <t>4-5</t>\n") == 0.0
    )  # chain never closed: no final answer
    with pytest.raises(DataError, match="picks none"):
        reward(_sample(answer="(D) chirp", choices=("low tone", "melody")), "melody")


def test_accuracy_numbers_yes_no_and_open_answers():
    reward = AccuracyReward()
    assert reward(_sample(answer="3"), "It is heard 3 times.") == 1.0
    assert reward(_sample(answer="2.5 seconds"), "2.9") == 1.0
    assert reward(_sample(answer="2.5 seconds"), "3.1") == 0.0
    assert reward(_sample(answer="yes"), "Yes, they overlap.") == 1.0
    assert reward(_sample(answer="no"), "yes") == 0.0
    assert reward(_sample(answer="noise burst"), "the noise burst") == 1.0
    assert (
        reward(_sample(answer="noise burst"), "noise burst low tone melody") == 0.0
    )  # listing everything
    assert (
        AccuracyReward(open_match="contains")(_sample(answer="noise burst"), "noise burst melody")
        == 1.0
    )


class _Judge:
    min_score, max_score = 0.0, 10.0

    def __init__(self, score):
        self.value, self.items = score, []

    def score(self, items):
        self.items += items
        return [self.value]


def test_accuracy_open_answers_by_a_judge():
    judge = _Judge(7.0)
    assert AccuracyReward(judge=judge)(_sample(answer="a dog barks twice"), "a dog barked") == 0.7
    assert judge.items == [
        {"question": "", "reference": "a dog barks twice", "prediction": "a dog barked"}
    ]
    with pytest.raises(DataError, match="no score"):
        AccuracyReward(judge=_Judge(None))(_sample(answer="a dog"), "a cat")
    with pytest.raises(ConfigError, match="open_match"):
        AccuracyReward(open_match="fuzzy")


def test_tacot_format_reward():
    reward = TACoTFormatReward()
    assert reward(_sample(), _chain("<t>1-3</t>", "<t>4-5</t>")) == 1.0
    assert reward(_sample(), _chain("<t>1-3</t>", answer="")) == 0.0  # no final answer
    assert reward(_sample(), _chain("<t>4-9</t>")) == 0.0  # past the audio
    assert reward(_sample(), "melody") == 0.0  # no chain
    assert TACoTFormatReward(require_think=False)(_sample(), "melody") == 1.0
    assert TACoTFormatReward(partial=True)(_sample(), "<think>\nno span\n</think>\n") == 0.5


def test_length_penalty_is_dapos_soft_overlong_punishment():
    penalty = LengthPenalty(max_length=10, buffer=4)
    assert penalty(_sample(), "w " * 6) == 0.0
    assert penalty(_sample(), "w " * 8) == -0.5
    assert penalty(_sample(), "w " * 12) == -1.0
    with pytest.raises(ConfigError, match="buffer"):
        LengthPenalty(max_length=3, buffer=5)


def test_a_reward_that_raises_is_counted_not_fatal(caplog):
    def boom(sample, completion):
        raise RuntimeError("judge unreachable")

    rewards = RewardSet(
        {"accuracy": AccuracyReward(), "boom": boom}, {"accuracy": 1.0, "boom": 0.5}
    )
    with caplog.at_level(logging.WARNING):
        scores = rewards.score([_sample(), _sample()], ["melody", "low tone"])
    assert scores.total.tolist() == [1.0, 0.0]
    assert scores.components["boom"].tolist() == [0.0, 0.0]
    assert scores.failed["boom"].tolist() == [True, True] and not scores.failed["accuracy"].any()
    assert rewards.failures == {"boom": 2}
    assert "reward boom failed on s (m.jsonl:1): RuntimeError: judge unreachable" in caplog.text
    restored = RewardSet({"boom": boom}, {"boom": 1.0})
    restored.load_state_dict(rewards.state_dict())
    assert restored.failures["boom"] == 2


def test_reward_weights_name_built_rewards():
    with pytest.raises(ConfigError, match=r"\['grounding'\]"):
        RewardSet({"accuracy": AccuracyReward()}, {"accuracy": 1.0, "grounding": 1.0})
    with pytest.raises(ConfigError, match="needs rewards"):
        RewardSet({"accuracy": AccuracyReward()}, {})


def test_every_reward_option_composes_and_builds():
    from hydra.utils import instantiate

    options = config_groups()["reward"]
    assert {"accuracy", "tacot_format", "grounding", "length"} <= set(options)
    cfg = compose_config("train", ["experiment=tiny_grpo", f"reward=[{','.join(options)}]"])
    for name in options:
        reward = instantiate(cfg.reward[name], _convert_="all")
        assert isinstance(reward, Reward), name
        assert isinstance(reward(_sample(), _chain("<t>1-3</t>")), float)
