"""The settings of a GRPO stage: the ``grpo:`` block of an ``objective: grpo`` curriculum stage.

Defaults follow TRL's ``GRPOConfig`` where afnext has the same knob (``loss_type: dapo``, ``epsilon: 0.2``,
``beta: 0``, ``scale_rewards: group``, 8 generations, temperature 1) and R1-AQA otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from afnext.errors import ConfigError
from afnext.training.grpo_loss import LOSS_TYPES, SCALE_REWARDS

__all__ = ["GRPOSettings"]


@dataclass(frozen=True)
class GRPOSettings:
    """How a GRPO stage samples, scores and updates.

    Attributes:
        rewards: ``{reward name: weight}``; each name is a reward of the composed config's ``reward`` group
            (``conf/reward/<name>.yaml``).
        num_generations: Completions per prompt (the group, ``G``); ``data.batch_size`` prompts per rollout.
        max_new_tokens: Longest completion (tokens).
        temperature: Sampling temperature (log-probabilities are of the tempered distribution, as TRL).
        top_p: Nucleus sampling (1: off).
        top_k: Top-k sampling (None / 0: off).
        scale_rewards: ``group`` (R1-AQA: ``(r - mean) / (std + 1e-4)``), ``batch`` or ``none`` (Dr. GRPO).
        epsilon: Clip range below 1 (and above, unless ``epsilon_high``).
        epsilon_high: Clip range above 1 (DAPO's clip-higher uses 0.28); None: ``epsilon``.
        beta: KL coefficient against the frozen start policy (k3 estimator); 0 builds no reference.
        loss_type: ``dapo`` | ``grpo`` | ``dr_grpo`` | ``bnpo`` (:mod:`afnext.training.grpo_loss`).
        num_iterations: Passes over each rollout (PPO epochs, TRL's ``num_iterations``).
        steps_per_rollout: Optimizer steps per pass; the rollout's completions are split into this many
            minibatches (shuffled with the rollout's seed).
        micro_batch_size: Completions per forward / backward inside a step (gradient accumulation); None: the
            whole minibatch.
        mask_truncated_completions: Leave completions cut at ``max_new_tokens`` out of the loss (DAPO).
        log_completions_every: Write (and log to W&B) a table of sampled completions every this many rollouts
            (0: never).
        log_completions: Rows per table.
        logprob_chunk_size: Tokens per LM-head block when computing log-probabilities.
        engine: Hydra config of a rollout engine factory (``model -> RolloutEngine``, ``_partial_: true``); None:
            :class:`afnext.training.rollout.InProcessEngine`.
        seed: Seeds the rollouts (with the step and rank); None: the run's ``seed``.
    """

    rewards: Mapping[str, float] = field(default_factory=dict)
    num_generations: int = 8
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    scale_rewards: str = "group"
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    loss_type: str = "dapo"
    num_iterations: int = 1
    steps_per_rollout: int = 1
    micro_batch_size: int | None = None
    mask_truncated_completions: bool = False
    log_completions_every: int = 10
    log_completions: int = 16
    logprob_chunk_size: int = 1024
    engine: Mapping[str, Any] | None = None
    seed: int | None = None

    @property
    def updates_per_rollout(self) -> int:
        """Optimizer steps each rollout feeds (``num_iterations x steps_per_rollout``)."""
        return self.num_iterations * self.steps_per_rollout

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None, where: str = "grpo") -> GRPOSettings:
        """Settings from a stage's ``grpo`` block, checked.

        Args:
            raw: The block (plain dict).
            where: Its config path, for messages (``curriculum.stages.cot_grpo.grpo``).

        Raises:
            ConfigError: Unknown keys or values out of range (the message names the key).
        """
        raw = dict(raw or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{where} has unknown keys {unknown}; allowed: {sorted(known)}")
        settings = cls(**raw)
        settings.check(where)
        return settings

    def check(self, where: str = "grpo") -> None:
        """Raise :class:`ConfigError` naming ``<where>.<key>`` for a value out of range."""
        if not isinstance(self.rewards, Mapping) or not self.rewards:
            raise ConfigError(
                f"{where}.rewards must map reward names to weights, e.g. {{accuracy: 1.0}} (conf/reward/)"
            )
        positive = {
            "num_generations": self.num_generations,
            "max_new_tokens": self.max_new_tokens,
            "num_iterations": self.num_iterations,
            "steps_per_rollout": self.steps_per_rollout,
            "logprob_chunk_size": self.logprob_chunk_size,
        }
        for key, value in positive.items():
            if int(value) < 1:
                raise ConfigError(f"{where}.{key}={value} must be >= 1")
        if self.num_generations < 2:
            raise ConfigError(
                f"{where}.num_generations={self.num_generations}: advantages are relative to the group, give "
                "at least 2 completions per prompt"
            )
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise ConfigError(
                f"{where}.micro_batch_size={self.micro_batch_size} must be >= 1 or null"
            )
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ConfigError(
                f"{where}: sampling needs temperature > 0 and 0 < top_p <= 1; got {self.temperature}, "
                f"{self.top_p}"
            )
        if self.scale_rewards not in SCALE_REWARDS:
            raise ConfigError(
                f"{where}.scale_rewards={self.scale_rewards!r}; use one of {list(SCALE_REWARDS)}"
            )
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(
                f"{where}.loss_type={self.loss_type!r}; use one of {list(LOSS_TYPES)}"
            )
        if self.epsilon < 0 or (self.epsilon_high is not None and self.epsilon_high < 0):
            raise ConfigError(f"{where}.epsilon / epsilon_high must be >= 0")
        if self.beta < 0:
            raise ConfigError(f"{where}.beta={self.beta} must be >= 0 (0: no reference model)")
