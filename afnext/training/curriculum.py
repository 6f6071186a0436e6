"""A training run is a list of stages (AF-Next: pre-train 1/2, mid-train 1/2, post-train, CoT).

Each stage says what trains, its learning rates, the longest audio and context it sees, its data mixture
and its step budget; anything a stage leaves out comes from the run's top-level config (``model.trainable``,
``optim.lr``, ``trainer.max_steps``, ``data``). Stages run in order, each starting from the weights the
previous one saved; a finished stage leaves ``stages/<i>_<name>/DONE`` so a resumed run skips it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from afnext.errors import ConfigError

__all__ = ["OBJECTIVES", "Stage", "plan_stages", "stage_dir"]

_STAGE_KEYS = {
    "name",
    "trainable",
    "lr",
    "max_audio_seconds",
    "max_length",
    "max_steps",
    "warmup_steps",
    "data",
    "note",
    "sequence_parallel",
    "objective",
    "grpo",
}

OBJECTIVES = ("sft", "grpo")
"""What a stage trains with: supervised next-token loss on the answers (``sft``) or group relative policy
optimisation on sampled answers scored by rewards (``grpo``, :mod:`afnext.training.grpo`)."""


@dataclass(frozen=True)
class Stage:
    """One stage of a curriculum.

    Attributes:
        name: Stage name (``pretrain1``); ``+stage=<name>`` runs it alone.
        trainable: Parts that train (``encoder``, ``connector``, ``llm``, ``lora``).
        lr: Learning rate per part (``default`` for the rest).
        max_audio_seconds: Longest audio fed in this stage (longer samples are skipped and counted).
        max_length: Context length in tokens (longer samples are skipped and counted).
        max_steps: Optimizer steps in this stage.
        warmup_steps: Linear warmup steps of this stage's schedule.
        data: Overrides merged into the ``data`` config (the stage's mixture: ``train: [{path, weight}]``).
        note: Free text (what the paper did differently, e.g. GRPO).
        sequence_parallel: Ranks that share one sequence in this stage (``afnext plan`` says which degree a stage
            needs); default: ``trainer.sequence_parallel``.
        objective: ``sft`` (the default) or ``grpo`` (see :data:`OBJECTIVES`).
        grpo: The GRPO settings of an ``objective: grpo`` stage (:class:`afnext.training.grpo.GRPOSettings`:
            group size, sampling, rewards and their weights, clipping, KL, loss aggregation); empty for SFT.
    """

    name: str
    trainable: tuple[str, ...]
    lr: Mapping[str, float]
    max_audio_seconds: float | None
    max_length: int | None
    max_steps: int
    warmup_steps: int
    data: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    objective: str = "sft"
    grpo: Mapping[str, Any] = field(default_factory=dict)
    sequence_parallel: int | None = None


def _lr(value: Any) -> dict[str, float]:
    if isinstance(value, (int, float)):
        return {"default": float(value)}
    return {str(k): float(v) for k, v in dict(value).items()}


def _named(
    stages: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
    order: Sequence[str] | None,
) -> list[dict[str, Any]]:
    """The stages as a list in run order: ``curriculum.stages`` keyed by name with ``curriculum.order``, or a
    plain list of stages that each carry a ``name``."""
    if not isinstance(stages, Mapping):
        return [dict(raw) for raw in stages]
    if order is None:
        raise ConfigError(
            f"curriculum.stages is keyed by name ({list(stages)}) but curriculum.order is missing; give the "
            "order the stages run in"
        )
    unknown = [name for name in order if name not in stages]
    left_out = [name for name in stages if name not in order]
    if unknown or left_out:
        raise ConfigError(
            f"curriculum.order {list(order)} and curriculum.stages {list(stages)} disagree: "
            f"{'no stage ' + str(unknown) if unknown else ''}{'; not in the order ' + str(left_out) if left_out else ''}"
        )
    named = []
    for name in order:
        raw = dict(stages[name] or {})
        if raw.get("name", name) != name:
            raise ConfigError(
                f"curriculum.stages.{name} says name={raw['name']!r}; drop the name key"
            )
        named.append({**raw, "name": name})
    return named


def plan_stages(
    stages: Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Any]],
    *,
    defaults: Mapping[str, Any],
    only: str | Sequence[str] | None = None,
    order: Sequence[str] | None = None,
) -> list[Stage]:
    """Turn the curriculum config into stages, filling gaps from the run's defaults.

    Args:
        stages: ``curriculum.stages``: plain dicts keyed by stage name (override one with
            ``curriculum.stages.midtrain2.lr.default=...``), or a list of dicts with ``name``.
        defaults: ``trainable``, ``lr``, ``max_audio_seconds``, ``max_length``, ``max_steps``,
            ``warmup_steps`` of the run.
        only: Run just this stage (``stage=midtrain2``), or these stages in curriculum order
            (``stage=[cot,cot_grpo]``).
        order: ``curriculum.order``, the stage names in run order (for stages keyed by name).

    Raises:
        ConfigError: Unknown keys, duplicate or missing names, an order that disagrees with the stages, or
            ``only`` naming no stage.
    """
    if not stages:
        raise ConfigError("curriculum.stages is empty; give at least one stage (curriculum=single)")
    stages = _named(stages, order)
    planned: list[Stage] = []
    for i, raw in enumerate(stages):
        unknown = sorted(set(raw) - _STAGE_KEYS)
        if unknown:
            where = (
                f"curriculum.stages.{raw['name']}" if raw.get("name") else f"curriculum.stages[{i}]"
            )
            raise ConfigError(f"{where} has unknown keys {unknown}; allowed: {sorted(_STAGE_KEYS)}")
        if not raw.get("name"):
            raise ConfigError(f"curriculum.stages[{i}] needs a name")
        objective = str(raw.get("objective") or "sft")
        if objective not in OBJECTIVES:
            raise ConfigError(
                f"curriculum.stages.{raw['name']}.objective={objective!r}; use one of {list(OBJECTIVES)}"
            )
        if raw.get("grpo") and objective != "grpo":
            raise ConfigError(
                f"curriculum.stages.{raw['name']} has a grpo block but objective={objective!r}; set "
                "objective: grpo or drop the block"
            )

        def pick(key: str, raw: Mapping[str, Any] = raw) -> Any:
            return raw[key] if raw.get(key) is not None else defaults.get(key)

        planned.append(
            Stage(
                name=str(raw["name"]),
                trainable=tuple(pick("trainable")),
                lr=_lr(pick("lr")),
                max_audio_seconds=pick("max_audio_seconds"),
                max_length=pick("max_length"),
                max_steps=int(pick("max_steps")),
                warmup_steps=int(pick("warmup_steps") or 0),
                data=dict(raw.get("data") or {}),
                note=str(raw.get("note") or ""),
                objective=objective,
                grpo=dict(raw.get("grpo") or {}),
                sequence_parallel=int(raw["sequence_parallel"])
                if raw.get("sequence_parallel")
                else None,
            )
        )
    names = [s.name for s in planned]
    if len(set(names)) != len(names):
        raise ConfigError(f"curriculum stage names repeat: {names}")
    if only is not None:
        wanted = [only] if isinstance(only, str) else [str(name) for name in only]
        missing = [name for name in wanted if name not in names]
        if isinstance(only, str) and missing:
            raise ConfigError(f"stage={only!r} is not in the curriculum; stages are {names}")
        if missing or not wanted:
            raise ConfigError(
                f"stage={list(wanted)}: {missing or 'no stage named'} not in the curriculum; stages are {names}"
            )
        return [stage for stage in planned if stage.name in wanted]
    return planned


def stage_dir(run_dir: Path, index: int, stage: Stage) -> Path:
    """Folder of one stage inside a run: checkpoints, logs, the exported model, the DONE marker."""
    return Path(run_dir) / "stages" / f"{index}_{stage.name}"


def mark_done(folder: Path, info: Mapping[str, Any]) -> None:
    """Write the stage's DONE marker (atomically) once its model is saved."""
    from afnext.storage import write_json

    write_json(folder / "DONE", dict(info))


def is_done(folder: Path) -> bool:
    return (folder / "DONE").is_file() and (folder / "model").is_dir()


def read_done(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "DONE").read_text())
