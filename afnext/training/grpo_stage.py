"""Building a GRPO stage from the composed config (``afnext.training.run.build_stage`` calls these for
``objective: grpo`` stages).

* :func:`grpo_run_config`: the run config as a GRPO stage needs it: Lightning's gradient clipping moves into the
  module (manual optimisation refuses Lightning's own), and the best checkpoint is chosen by ``val/reward``
  (highest) instead of ``val/loss`` (GRPO validation lines need no reference answer turn).
* :func:`build_rewards`: the stage's :class:`~afnext.training.rewards.base.RewardSet` from the composed
  ``reward`` group (``conf/reward/<name>.yaml``, afnext's or a plugin's) and the stage's weights.
* :func:`build_grpo_module`: the :class:`~afnext.training.grpo.GRPOModule`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from afnext.errors import ConfigError
from afnext.training.curriculum import Stage
from afnext.training.grpo_settings import GRPOSettings

__all__ = ["build_grpo_module", "build_rewards", "grpo_run_config", "stage_settings"]


def stage_settings(stage: Stage) -> GRPOSettings:
    """The checked :class:`GRPOSettings` of a stage's ``grpo`` block."""
    return GRPOSettings.from_config(stage.grpo, where=f"curriculum.stages.{stage.name}.grpo")


def grpo_run_config(cfg: DictConfig, stage: Stage) -> tuple[DictConfig, float | None]:
    """A copy of ``cfg`` for a GRPO stage, and the gradient-clipping norm the module applies itself.

    Raises:
        ConfigError: ``trainer.accumulate_grad_batches`` > 1 (use ``grpo.micro_batch_size``), or packed data.
    """
    cfg = copy.deepcopy(cfg)  # the later stages keep the run's settings
    with open_dict(cfg):
        accumulate = int(cfg.trainer.get("accumulate_grad_batches") or 1)
        if accumulate != 1:
            raise ConfigError(
                f"trainer.accumulate_grad_batches={accumulate}: a GRPO stage (curriculum.stages.{stage.name}) "
                "takes its optimizer steps itself; set it to 1 and use grpo.micro_batch_size to accumulate "
                "gradients within a step"
            )
        sequence_parallel = int(
            stage.sequence_parallel or cfg.trainer.get("sequence_parallel") or 1
        )
        if sequence_parallel > 1:
            raise ConfigError(
                f"GRPO stage {stage.name} has sequence_parallel={sequence_parallel}: sampling and scoring whole "
                f"completions is not split over ranks yet; set curriculum.stages.{stage.name}.sequence_parallel=1"
            )
        clip = cfg.trainer.get("gradient_clip_val")
        cfg.trainer.gradient_clip_val = None
        data = OmegaConf.merge(cfg.data, stage.data)
        if data.get("pack"):
            raise ConfigError(
                f"data.pack=true in GRPO stage {stage.name}: GRPO samples completions per prompt and needs one "
                "prompt per row; set data.pack=false for this stage"
            )
        checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint")
        if checkpoint is not None and checkpoint.get("monitor") == "val/loss":
            checkpoint.monitor, checkpoint.mode = "val/reward", "max"
    return cfg, float(clip) if clip else None


def build_rewards(cfg: DictConfig, settings: GRPOSettings, stage_name: str) -> Any:
    """The stage's weighted rewards, each built from ``cfg.reward.<name>``.

    Raises:
        ConfigError: A weighted reward is not in the composed ``reward`` group.
    """
    from hydra.utils import instantiate

    from afnext.training.rewards.base import RewardSet

    composed = cfg.get("reward") or {}
    missing = [name for name in settings.rewards if name not in composed]
    if missing:
        raise ConfigError(
            f"curriculum.stages.{stage_name}.grpo.rewards weights {missing}, which the composed config has no "
            f"reward for (it has {sorted(composed)}); add them with +reward=[{','.join(missing)}] (files "
            "conf/reward/<name>.yaml, afnext's or a plugin's)"
        )
    rewards = {name: instantiate(composed[name], _convert_="all") for name in settings.rewards}
    return RewardSet(rewards, dict(settings.rewards))


def build_grpo_module(
    cfg: DictConfig,
    stage: Stage,
    model: Any,
    *,
    gradient_clip_val: float | None,
    module_kwargs: Mapping[str, Any],
) -> Any:
    """The :class:`~afnext.training.grpo.GRPOModule` of a stage.

    Args:
        cfg: The run config (from :func:`grpo_run_config`).
        stage: The stage (``objective: grpo``).
        model: The stage's start model.
        gradient_clip_val: Gradient norm to clip to (from :func:`grpo_run_config`).
        module_kwargs: :class:`~afnext.training.module.AudioLanguageModule`'s arguments (``trainable``, ``lr``,
            ``optimizer``, ``scheduler``, ``warmup_steps``, ``optim.module``'s keys).
    """
    from hydra.utils import instantiate

    from afnext.training.grpo import GRPOModule

    settings = stage_settings(stage)
    rewards = build_rewards(cfg, settings, stage.name)
    engine = None
    if settings.engine:
        factory = instantiate(OmegaConf.create(dict(settings.engine)), _convert_="all")
        engine = factory(model) if callable(factory) else factory
    return GRPOModule(
        model,
        settings=settings,
        rewards=rewards,
        engine=engine,
        gradient_clip_val=gradient_clip_val,
        seed=int(cfg.get("seed") or 0),
        **module_kwargs,
    )
