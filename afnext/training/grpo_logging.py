"""Tables of sampled GRPO completions: ``<stage>/rollouts/step_<N>.jsonl`` and, with a W&B logger, a W&B table
(``train/completions``) with the audio playable, each completion's total reward, advantage and reward components.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "completion_rows", "write_completion_table"]

COLUMNS = (
    "step",
    "seed",
    "id",
    "audio",
    "question",
    "completion",
    "reward",
    "advantage",
    "truncated",
)
"""The fixed columns of a table; one column per reward component follows."""


def completion_rows(rollout: Any, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` completions of a rollout (whole groups first), as table rows.

    Args:
        rollout: A :class:`afnext.training.grpo.Rollout`.
        limit: Most rows.
    """
    group = rollout.size // max(len(rollout.samples), 1)
    rows = []
    for i in range(min(limit, rollout.size)):
        sample = rollout.samples[i // max(group, 1)]
        rows.append(
            {
                "step": rollout.step,
                "seed": rollout.seed,
                "id": sample.id,
                "audio": sample.sounds[0] if sample.sounds else None,
                "question": sample.question,
                "answer": sample.answer,
                "completion": rollout.texts[i],
                "reward": float(rollout.rewards[i]),
                "advantage": float(rollout.advantages[i]),
                "truncated": bool(rollout.truncated[i]),
                "rewards": {name: float(v[i]) for name, v in rollout.components.items()},
                "failed": [name for name, f in rollout.failed.items() if bool(f[i])],
            }
        )
    return rows


def write_completion_table(trainer: Any, rows: list[dict[str, Any]], step: int) -> Path | None:
    """Write rows to ``<stage>/rollouts/step_<step>.jsonl`` and to every W&B logger as a table.

    Returns:
        The JSONL file, or None without rows.
    """
    if not rows:
        return None
    out = Path(trainer.default_root_dir) / "rollouts" / f"step_{step}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from lightning.pytorch.loggers import WandbLogger

    loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
    if loggers:
        import wandb

        names = sorted({name for r in rows for name in r["rewards"]})
        columns = [*COLUMNS, *names]
        data = [
            [
                r["step"],
                r["seed"],
                r["id"],
                wandb.Audio(r["audio"]) if r["audio"] and Path(r["audio"]).is_file() else None,
                r["question"],
                r["completion"],
                r["reward"],
                r["advantage"],
                r["truncated"],
                *(r["rewards"].get(n) for n in names),
            ]
            for r in rows
        ]
        for logger in loggers:
            logger.log_table("train/completions", columns=columns, data=data, step=step)
    return out
