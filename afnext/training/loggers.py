"""Experiment loggers: W&B (online with an API key, otherwise offline into the run folder) and CSV."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["finish_logger", "stage_run_id", "wandb_has_credentials", "wandb_logger"]

RUN_ID_FILE = "wandb_run_id"


def stage_run_id(save_dir: str | os.PathLike) -> str:
    """The W&B run id of a stage folder: read from ``wandb_run_id`` there, or made and written (by global rank
    0; other ranks log nothing) on first use."""
    from lightning.pytorch.utilities import rank_zero_only

    path = Path(save_dir) / RUN_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    import uuid

    run_id = uuid.uuid4().hex[:12]  # W&B run ids: up to 64 letters and digits
    if rank_zero_only.rank == 0:
        from afnext.storage import atomic_write_text

        atomic_write_text(path, run_id + "\n")
    return run_id


def wandb_has_credentials() -> bool:
    """True when W&B can log online: ``WANDB_API_KEY`` is set or ``~/.netrc`` has api.wandb.ai."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_logger(
    save_dir: str,
    *,
    project: str = "afnext",
    entity: str | None = None,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    offline: bool | str = "auto",
    log_model: bool = False,
) -> Any:
    """Lightning's ``WandbLogger``, offline into ``save_dir`` when there is no API key.

    Args:
        save_dir: Folder of the run (W&B writes ``save_dir/wandb/``).
        project: W&B project.
        entity: W&B entity (team or user); ``None``: the default.
        name: Run name; group: runs of one curriculum share a group.
        tags: Run tags.
        offline: ``True`` / ``False``, or ``"auto"``: offline unless an API key is configured (or
            ``WANDB_MODE=offline``).
        log_model: Upload checkpoints as W&B artifacts.

    The run id is kept in ``save_dir/wandb_run_id``: a resumed stage (same folder) continues the same W&B run
    (``resume="allow"``) instead of opening a new one.
    """
    from lightning.pytorch.loggers import WandbLogger

    if offline == "auto":
        offline = (
            os.environ.get("WANDB_MODE") in ("offline", "dryrun") or not wandb_has_credentials()
        )
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        name=name,
        group=group,
        tags=tags,
        offline=bool(offline),
        log_model=log_model,
        id=stage_run_id(save_dir),
        resume="allow",
    )
    if offline:
        Console(stderr=True).print(
            f"[cyan]W&B offline[/] (no API key): the run is written to {Path(save_dir) / 'wandb'}. "
            f"Upload it later with: wandb sync {Path(save_dir) / 'wandb'}/offline-run-*"
        )
    return logger


def finish_logger(logger: Any) -> None:
    """Close the W&B run a ``WandbLogger`` opened (Lightning leaves it open): otherwise the next stage's, or the
    next command's, logger in this process would write into it instead of opening its own run."""
    from lightning.pytorch.loggers import WandbLogger

    loggers = logger if isinstance(logger, (list, tuple)) else [logger]
    for one in loggers:
        if isinstance(one, WandbLogger) and getattr(one, "_experiment", None) is not None:
            one.experiment.finish()
            one._experiment = None
