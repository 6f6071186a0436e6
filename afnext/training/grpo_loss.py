"""The GRPO objective as pure tensor functions: group-relative advantages, the clipped policy-ratio loss with a
k3 KL penalty, and TRL's loss aggregations.

Definitions follow TRL's ``GRPOTrainer`` (``trl/trainer/grpo_trainer.py``: ``_generate_and_score_completions`` for
the advantages, ``_compute_loss`` for the loss) and the papers they cite:

* advantages (DeepSeekMath, arXiv 2402.03300; R1-AQA's ``(r - mean) / (std + 1e-4)``): ``r_i - mean(group)``,
  divided by the group's standard deviation (Bessel-corrected, as TRL's ``nanstd``) plus ``1e-4`` when
  ``scale_rewards="group"``, by the whole batch's with ``"batch"``, by nothing with ``"none"`` (Dr. GRPO,
  arXiv 2503.20783);
* per token, with ``ratio = exp(logp - logp_old)``: ``-min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)``
  (PPO's clipped surrogate; ``eps_high > eps_low`` is DAPO's clip-higher, arXiv 2503.14476), plus
  ``beta * (exp(ref - logp) - (ref - logp) - 1)``, the k3 estimator of KL(policy || reference) (Schulman's
  "Approximating KL divergence");
* aggregation over the completion tokens of one optimizer step (``mask`` 1 on completion tokens up to and
  including the end-of-turn token; prompts, padding and masked truncated completions are 0):

  - ``grpo``: the mean over sequences of each sequence's token mean;
  - ``bnpo`` (the token-level mean): the sum over tokens / the tokens of this rank's batch;
  - ``dr_grpo``: the sum / (sequences x ``max_completion_length``);
  - ``dapo`` (TRL's default): the sum / the tokens of the whole step summed over data-parallel ranks, times
    the number of ranks (DDP then averages the gradients, so the step's gradient is the global token mean).

  With gradient accumulation inside one step (``micro_batch_size``), each micro-batch's sum is divided by the
  step's totals, so the accumulated gradient equals the one of the whole step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from afnext.errors import ConfigError

__all__ = [
    "LOSS_TYPES",
    "SCALE_REWARDS",
    "LossStats",
    "group_advantages",
    "k3_kl",
    "policy_loss",
]

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
"""Loss aggregations, named as TRL names them (``bnpo``: the token-level mean)."""
SCALE_REWARDS = ("group", "batch", "none")
"""How advantages are scaled (TRL's ``scale_rewards``)."""
STD_EPS = 1e-4
"""Added to the standard deviation (TRL, R1-AQA)."""


def group_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: str = "group", eps: float = STD_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages of completions relative to their group (the completions of one prompt).

    Args:
        rewards: ``(P * G,)`` total rewards, the ``G`` completions of each prompt next to each other.
        group_size: ``G``.
        scale: ``group`` (divide by the group's std + ``eps``), ``batch`` (by the std of all rewards + ``eps``) or
            ``none``.
        eps: Added to the standard deviation.

    Returns:
        ``(advantages (P * G,), zero_std (P,))``: ``zero_std`` marks groups whose rewards are all equal (no
        learning signal from them).

    Raises:
        ConfigError: ``scale`` is unknown or the rewards do not split into groups of ``group_size``.
    """
    if scale not in SCALE_REWARDS:
        raise ConfigError(f"grpo.scale_rewards={scale!r}; use one of {list(SCALE_REWARDS)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise ConfigError(
            f"{rewards.numel()} rewards do not split into groups of grpo.num_generations={group_size}"
        )
    grouped = rewards.float().view(-1, group_size)  # (P, G)
    mean = grouped.mean(dim=1, keepdim=True)
    # Bessel-corrected, as TRL's nanstd; a group of one has no spread.
    std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    advantages = grouped - mean
    if scale == "group":
        advantages = advantages / (std + eps)
    elif scale == "batch":
        total_std = rewards.float().std() if rewards.numel() > 1 else rewards.new_zeros(())
        advantages = advantages / (total_std + eps)
    zero_std = torch.isclose(std[:, 0], torch.zeros_like(std[:, 0]))
    return advantages.reshape(-1), zero_std


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """The k3 estimator of KL(policy || reference) per token: ``exp(r) - r - 1`` with ``r = ref - logp``;
    0 where the two agree, never negative."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1.0


@dataclass
class LossStats:
    """What one loss evaluation saw, summed so micro-batches add up (divide by ``tokens`` for means).

    Attributes:
        tokens: Active completion tokens.
        clipped: Active tokens whose ratio was clipped in the direction of their advantage (TRL's
            ``clip_ratio/region_mean`` numerator).
        kl: Summed per-token k3 KL (0 without a reference).
        ratio: Summed policy ratios.
    """

    tokens: float = 0.0
    clipped: float = 0.0
    kl: float = 0.0
    ratio: float = 0.0

    def add(self, other: LossStats) -> None:
        """Accumulate another micro-batch's counts."""
        self.tokens += other.tokens
        self.clipped += other.clipped
        self.kl += other.kl
        self.ratio += other.ratio


def policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str = "dapo",
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    max_completion_length: int | None = None,
    num_sequences: float | None = None,
    num_tokens: float | torch.Tensor | None = None,
    world_size: int = 1,
) -> tuple[torch.Tensor, LossStats]:
    """The clipped GRPO loss of a batch of completions (see the module docstring for the definitions).

    Args:
        logps: ``(B, T)`` log-probabilities of the completion tokens under the policy (with gradients).
        old_logps: ``(B, T)`` the same under the policy that sampled them (no gradient); ``None``: the policy
            itself (``logps.detach()``), exact when each rollout feeds a single update.
        advantages: ``(B,)`` one advantage per completion.
        mask: ``(B, T)`` 1 on the tokens that count.
        loss_type: One of :data:`LOSS_TYPES`.
        epsilon_low: Lower clip range (ratio >= 1 - epsilon_low).
        epsilon_high: Upper clip range (ratio <= 1 + epsilon_high); default ``epsilon_low``.
        ref_logps: ``(B, T)`` log-probabilities under the frozen reference (needed when ``beta > 0``).
        beta: KL coefficient.
        max_completion_length: ``dr_grpo``'s constant (the generation limit).
        num_sequences: Sequences of the whole optimizer step (``grpo``, ``dr_grpo``); default ``B``.
        num_tokens: Active tokens of the whole optimizer step: this rank's for ``bnpo``, all ranks' for
            ``dapo``; default ``mask.sum()``.
        world_size: Data-parallel ranks (``dapo`` multiplies by it to undo DDP's gradient averaging).

    Returns:
        ``(loss, stats)``: the scalar loss of these sequences' share of the step, and :class:`LossStats`.

    Raises:
        ConfigError: An unknown ``loss_type``, ``beta > 0`` without ``ref_logps``, or ``dr_grpo`` without
            ``max_completion_length``.
    """
    if loss_type not in LOSS_TYPES:
        raise ConfigError(f"grpo.loss_type={loss_type!r}; use one of {list(LOSS_TYPES)}")
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    mask = mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    ratio = torch.exp(logps - old)  # (B, T)
    clipped_ratio = torch.clamp(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    adv = advantages.to(logps.dtype)[:, None]  # (B, 1)
    per_token = -torch.min(ratio * adv, clipped_ratio * adv)
    kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ConfigError("grpo.beta > 0 needs the reference log-probabilities (ref_logps)")
        kl = k3_kl(logps, ref_logps)
        per_token = per_token + beta * kl
    sequences = float(num_sequences if num_sequences is not None else logps.shape[0])
    tokens = num_tokens if num_tokens is not None else mask.sum()
    tokens = torch.as_tensor(tokens, dtype=logps.dtype, device=logps.device).clamp(min=1.0)
    if loss_type == "grpo":
        per_sequence = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        loss = per_sequence.sum() / max(sequences, 1.0)
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / tokens
    elif loss_type == "dr_grpo":
        if not max_completion_length:
            raise ConfigError(
                "grpo.loss_type=dr_grpo needs max_completion_length (grpo.max_new_tokens)"
            )
        loss = (per_token * mask).sum() / (max(sequences, 1.0) * max_completion_length)
    else:  # dapo
        loss = (per_token * mask).sum() / tokens * world_size
    with torch.no_grad():
        low = (ratio < 1.0 - epsilon_low) & (adv < 0)
        high = (ratio > 1.0 + epsilon_high) & (adv > 0)
        stats = LossStats(
            tokens=float(mask.sum()),
            clipped=float(((low | high).to(mask.dtype) * mask).sum()),
            kl=float((kl * mask).sum()) if kl is not None else 0.0,
            ratio=float((ratio * mask).sum()),
        )
    return loss, stats
