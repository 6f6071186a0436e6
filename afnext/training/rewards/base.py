"""The reward interface: ``(sample, completion) -> float``, and the weighted set a GRPO stage scores with.

A reward is a small class built by Hydra from ``conf/reward/<name>.yaml`` (a plugin ships its own
``their_pkg/conf/reward/<name>.yaml``, found like an encoder's). It implements :class:`Reward`::

    class MyReward:
        def __call__(self, sample: RewardSample, completion: str) -> float: ...

``sample`` carries what the manifest line says about the prompt (reference answer, options, timeline, audio
duration, ...); ``completion`` is the decoded text the policy wrote. A stage weights the rewards it uses
(``grpo.rewards: {accuracy: 1.0, tacot_format: 0.5}``); the total is the weighted sum. A reward that raises is
counted as a failure of that reward (reward 0 for that completion, logged, the first few with the sample and the
error): a bad sample or a flaky judge never stops a run.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from afnext.errors import ConfigError, DataError

__all__ = ["Reward", "RewardSample", "RewardScores", "RewardSet"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardSample:
    """What the rewards know about one prompt (from its manifest line).

    Attributes:
        id: The line's ``id``.
        question: The user turn the completion answers.
        answer: The reference final answer (the line's ``answer``, else its first ``gpt`` turn).
        choices: The options of a multiple-choice question; empty when open.
        duration: Seconds of audio (the line's ``duration``, else the decoded audio's), or None.
        timeline: The line's ``timeline``: events as :meth:`afnext.reasoning.timeline.Timeline.to_list` writes
            them (``onset``, ``offset``, ``label``, ``kind``, ...), read lazily by :meth:`events`; a string is a
            JSON file holding that list (relative to the manifest's folder).
        question_type: The line's ``question_type`` ("" when absent).
        where: ``file:line`` of the line, for messages.
        sounds: The line's audio files (absolute paths).
        extra: Every other key of the line.
    """

    id: str
    question: str = ""
    answer: str = ""
    choices: tuple[str, ...] = ()
    duration: float | None = None
    timeline: Any = None
    question_type: str = ""
    where: str = "<sample>"
    sounds: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_record(cls, record: Any, *, audio_seconds: float | None = None) -> RewardSample:
        """From an :class:`afnext.data.manifest.ManifestRecord` (what the training datasets hold)."""
        messages = list(record.messages)
        first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
        asked = [m["content"] for m in messages[:first] if m["role"] == "user"]
        extra = dict(record.extra)
        answer = extra.get("answer")
        if answer is None and first < len(messages):
            answer = messages[first]["content"]
        timeline = extra.get("timeline")
        if isinstance(timeline, str) and not Path(timeline).is_absolute():
            timeline = str(Path(record.source).parent / timeline)
        return cls(
            id=str(record.id),
            question=asked[-1] if asked else "",
            answer=str(answer or ""),
            choices=tuple(str(c) for c in extra.get("choices") or ()),
            duration=record.duration if record.duration is not None else audio_seconds,
            timeline=timeline,
            question_type=str(extra.get("question_type") or ""),
            where=record.where,
            sounds=tuple(record.sounds),
            extra=extra,
        )

    def events(self) -> list[dict[str, Any]]:
        """The timeline's events (``[]`` without one).

        Raises:
            DataError: The timeline file is missing or not a JSON list of events (names the file).
        """
        timeline = self.timeline
        if timeline is None:
            return []
        if isinstance(timeline, str):
            path = Path(timeline)
            try:
                timeline = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise DataError(
                    f"{self.where}: cannot read its timeline file {path}: {exc}"
                ) from exc
            if isinstance(timeline, Mapping):
                timeline = timeline.get("events") or timeline.get("timeline")
        if not isinstance(timeline, list):
            raise DataError(
                f"{self.where}: 'timeline' must be a list of events or a path to a JSON list of them"
            )
        return timeline


@runtime_checkable
class Reward(Protocol):
    """A reward component: a score for one completion of one prompt (higher is better).

    Rewards are usually in ``[0, 1]`` (penalties in ``[-1, 0]``); the stage weights them. A reward may raise
    on input it cannot score; the caller counts that as a failure and uses 0.
    """

    def __call__(self, sample: RewardSample, completion: str) -> float:
        """Score ``completion`` (decoded text, special tokens removed) for the prompt of ``sample``."""
        ...


@dataclass
class RewardScores:
    """The rewards of a batch of completions.

    Attributes:
        total: ``(N,)`` weighted sum of the components.
        components: ``{name: (N,)}`` each reward's raw value (before weighting; 0 where it failed).
        failed: ``{name: (N,) bool}`` where each reward raised.
    """

    total: torch.Tensor
    components: dict[str, torch.Tensor]
    failed: dict[str, torch.Tensor]


class RewardSet:
    """The weighted rewards of a GRPO stage; counts and logs rewards that raise.

    Args:
        rewards: ``{name: reward}`` (built from ``conf/reward/<name>.yaml``).
        weights: ``{name: weight}``; every name must have a reward.
        max_logged_failures: Failures logged with their sample and error (the rest are only counted).

    Attributes:
        failures: Failures so far per reward name.

    Raises:
        ConfigError: No rewards, a weight without a reward, or a reward that is not callable.
    """

    def __init__(
        self,
        rewards: Mapping[str, Reward],
        weights: Mapping[str, float],
        *,
        max_logged_failures: int = 10,
    ) -> None:
        if not weights:
            raise ConfigError(
                "a GRPO stage needs rewards: set grpo.rewards to {name: weight} with names of conf/reward/ "
                "(e.g. {accuracy: 1.0})"
            )
        missing = [name for name in weights if name not in rewards]
        if missing:
            raise ConfigError(
                f"grpo.rewards weights {missing} but no such reward was built; add them to the composed "
                f"config's reward group (reward=[...], conf/reward/); built: {sorted(rewards)}"
            )
        for name, reward in rewards.items():
            if not callable(reward):
                raise ConfigError(
                    f"reward {name!r} ({type(reward).__name__}) is not callable; a reward implements "
                    "__call__(sample, completion) -> float (afnext/training/rewards/base.py)"
                )
        self.rewards = {name: rewards[name] for name in weights}
        self.weights = {name: float(w) for name, w in weights.items()}
        self.failures: Counter[str] = Counter()
        self.max_logged_failures = max_logged_failures
        self._logged = 0

    @property
    def names(self) -> list[str]:
        """The reward names, in weight order."""
        return list(self.weights)

    def _one(self, name: str, sample: RewardSample, completion: str) -> float | None:
        try:
            value = float(self.rewards[name](sample, completion))
            if value != value or value in (float("inf"), float("-inf")):
                raise DataError(f"reward {name!r} returned {value}")
            return value
        except (
            Exception
        ) as exc:  # a reward failure is counted, never fatal (see the module docstring)
            self.failures[name] += 1
            if self._logged < self.max_logged_failures:
                self._logged += 1
                log.warning(
                    "reward %s failed on %s (%s): %s: %s%s",
                    name,
                    sample.id,
                    sample.where,
                    type(exc).__name__,
                    exc,
                    " (further failures are only counted)"
                    if self._logged == self.max_logged_failures
                    else "",
                )
            return None

    def score(self, samples: Sequence[RewardSample], completions: Sequence[str]) -> RewardScores:
        """Every reward of every completion; ``samples[i]`` is the prompt of ``completions[i]``.

        Returns:
            :class:`RewardScores` (float32 tensors on the CPU).
        """
        if len(samples) != len(completions):
            raise DataError(f"{len(completions)} completions for {len(samples)} samples")
        components, failed = {}, {}
        total = torch.zeros(len(completions))
        for name in self.names:
            values = [self._one(name, s, c) for s, c in zip(samples, completions)]
            failed[name] = torch.tensor([v is None for v in values], dtype=torch.bool)
            components[name] = torch.tensor([0.0 if v is None else v for v in values])
            total += self.weights[name] * components[name]
        return RewardScores(total=total, components=components, failed=failed)

    def state_dict(self) -> dict[str, Any]:
        """Failure counts (kept in checkpoints so a resumed stage keeps counting)."""
        return {"failures": dict(self.failures), "logged": self._logged}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.failures = Counter(
            {str(k): int(v) for k, v in dict(state.get("failures", {})).items()}
        )
        self._logged = int(state.get("logged", 0))
