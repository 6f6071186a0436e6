"""Rewards for GRPO stages: each a small class ``(sample, completion) -> float`` built from ``conf/reward/``.

* :mod:`~afnext.training.rewards.base`: the :class:`Reward` protocol, :class:`RewardSample` (what a manifest line
  tells the rewards) and :class:`RewardSet` (weights; a reward that raises is a counted failure, reward 0).
* :class:`AccuracyReward`: the final answer against the reference (MMAU rule for options, numbers, yes / no,
  an LLM judge or exact match for open answers).
* :class:`TACoTFormatReward`: the TACoT validator accepts the response.
* :class:`GroundingReward`: IoU of the cited ``<t>`` spans with the timeline's events.
* :class:`LengthPenalty`: DAPO's soft overlong penalty.
"""

from afnext.training.rewards.accuracy import AccuracyReward
from afnext.training.rewards.base import Reward, RewardSample, RewardScores, RewardSet
from afnext.training.rewards.grounding import GroundingReward
from afnext.training.rewards.length import LengthPenalty
from afnext.training.rewards.tacot_format import TACoTFormatReward

__all__ = [
    "AccuracyReward",
    "GroundingReward",
    "LengthPenalty",
    "Reward",
    "RewardSample",
    "RewardScores",
    "RewardSet",
    "TACoTFormatReward",
]
