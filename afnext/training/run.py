"""``afnext train`` / ``afnext validate``: build everything from a composed config and run the stages.

A run folder holds one sub-folder per curriculum stage (``stages/<i>_<name>/``: ``checkpoints/last.ckpt``
and the best one, logs, ``model/`` (the stage's weights in afnext format) and ``DONE``), the composed
``config.yaml``, and ``model`` / ``final.json`` naming the last finished stage's weights. Re-running the
same command with the same ``run_name`` resumes: finished stages are skipped, the interrupted one continues
from its ``last.ckpt`` (optimizer, schedule, data position).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console

from afnext.errors import ConfigError
from afnext.interop import resolve_checkpoint
from afnext.training.curriculum import (
    Stage,
    is_done,
    mark_done,
    plan_stages,
    read_done,
    stage_dir,
)
from afnext.training.loggers import finish_logger

__all__ = [
    "build_model",
    "build_stage",
    "export_stage_model",
    "run_dir_of",
    "train",
    "validate",
]

console = Console(stderr=True)


def run_dir_of(cfg: DictConfig) -> Path:
    """The run folder: Hydra's output dir under ``afnext train`` (one per multirun job), else
    ``paths.run_dir``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return Path(cfg.paths.run_dir)


def build_model(cfg: DictConfig, init_from: str | Path | None = None) -> Any:
    """Instantiate ``cfg.model`` or load weights from ``init_from`` (afnext or transformers folder).

    Weights loaded from ``init_from`` get the composed settings that are not weights: the LLM's and the
    encoder's attention back ends, the loss implementation, LoRA adapters (added when the checkpoint has none)
    and activation checkpointing (``llm.gradient_checkpointing``). Dtypes are set per stage by
    :func:`build_stage` (float32 for what trains, ``llm.dtype`` for a frozen LLM).
    """
    from hydra.utils import instantiate

    from afnext.model import AudioLanguageModel

    if not init_from:
        model = instantiate(cfg.model, _convert_="all")
        _record_specs(model, cfg)
        return model
    llm_cfg, enc_cfg = cfg.get("llm") or {}, cfg.get("encoder") or {}
    settings: dict[str, Any] = {}
    if llm_cfg.get("attn_implementation"):
        settings["attn_implementation"] = llm_cfg.attn_implementation
    if enc_cfg.get("attn_implementation"):
        settings["encoder_attn_implementation"] = enc_cfg.attn_implementation
    if cfg.get("model") is not None and cfg.model.get("loss_impl"):
        settings["loss_impl"] = cfg.model.loss_impl
    model = AudioLanguageModel.from_pretrained(resolve_checkpoint(init_from), **settings)
    lora = llm_cfg.get("lora")
    if lora and not model.llm.has_lora:
        model.llm.add_lora(OmegaConf.to_container(lora, resolve=True))
    if llm_cfg.get("gradient_checkpointing"):
        model.llm.enable_activation_checkpointing()
    return model


def _record_specs(model: Any, cfg: DictConfig) -> None:
    """What a checkpoint rebuilds each component from, for a component class that records nothing itself (a
    plugin's): its composed config, as Hydra instantiated it."""
    from afnext.interop.components import COMPONENTS
    from afnext.specs import record_spec, recorded_spec

    for name in COMPONENTS:
        part, part_cfg = getattr(model, name, None), cfg.model.get(name)
        if part is None or part_cfg is None or recorded_spec(part) is not None:
            continue
        if hasattr(part, "checkpoint_spec"):
            continue
        spec = OmegaConf.to_container(part_cfg, resolve=True)
        if isinstance(spec, dict) and "_target_" in spec and not spec.get("_partial_"):
            record_spec(part, spec)


def _make_logger(cfg: DictConfig, folder: Path, stage: Stage, run_name: str) -> Any:
    from hydra.utils import instantiate

    if cfg.get("logger") is None:
        return False
    logger = instantiate(cfg.logger, save_dir=str(folder), _convert_="all")
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        logger.experiment.name = f"{run_name}/{stage.name}"
    logger.log_hyperparams(
        {"config": OmegaConf.to_container(cfg, resolve=True), "stage": stage.__dict__}
    )
    return logger


def build_stage(cfg: DictConfig, stage: Stage, folder: Path, model: Any) -> tuple[Any, Any, Any]:
    """The LightningModule, DataModule and Trainer of one stage.

    Returns:
        ``(module, datamodule, trainer)``.
    """
    from hydra.utils import instantiate

    from afnext.data.processor import AudioProcessor
    from afnext.training.checkpoint_io import AtomicCheckpointIO
    from afnext.training.module import AudioLanguageModule
    from afnext.training.strategy import FSDP2Strategy

    with open_dict(cfg):
        cfg.paths.stage_dir = str(folder)
    module_kwargs = dict(
        trainable=stage.trainable,
        lr=stage.lr,
        warmup_steps=stage.warmup_steps,
        optimizer=instantiate(cfg.optim.optimizer, _convert_="all"),
        scheduler=instantiate(cfg.optim.scheduler, _convert_="all"),
        **OmegaConf.to_container(cfg.optim.module, resolve=True),
    )
    if stage.objective == "grpo":  # group relative policy optimisation (afnext.training.grpo)
        from afnext.training.grpo_stage import build_grpo_module, grpo_run_config

        # Gradient clipping moves into the module; the best checkpoint is chosen by val/reward.
        cfg, clip = grpo_run_config(cfg, stage)
        module = build_grpo_module(
            cfg, stage, model, gradient_clip_val=clip, module_kwargs=module_kwargs
        )
    else:
        module = AudioLanguageModule(model, **module_kwargs)
    data_cfg = OmegaConf.merge(cfg.data, stage.data)
    datamodule = instantiate(
        data_cfg,
        max_audio_seconds=stage.max_audio_seconds,
        max_length=stage.max_length,
        _convert_="all",
    )
    processor = AudioProcessor.from_model(
        model, padding_side="right", max_seconds=stage.max_audio_seconds
    )
    from afnext.data.cost import ModelDims

    datamodule.attach_processor(processor, ModelDims.from_model(model))
    callbacks = [
        instantiate(c, _convert_="all") for c in (cfg.get("callbacks") or {}).values() if c
    ]
    logger = _make_logger(cfg, folder, stage, str(cfg.run_name))
    trainer_cfg = cfg.trainer
    if stage.sequence_parallel is not None:
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"sequence_parallel": stage.sequence_parallel})
    trainer = instantiate(
        _trainer_config(trainer_cfg),
        default_root_dir=str(folder),
        max_steps=stage.max_steps,
        logger=logger,
        callbacks=callbacks,
        _convert_="all",
    )
    _set_dtypes(model, cfg, trainer)
    if not isinstance(trainer.strategy, FSDP2Strategy):
        # Atomic single-file checkpoints; FSDP2 writes its sharded ones atomically itself.
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    return module, datamodule, trainer


def _trainer_config(trainer: DictConfig) -> DictConfig:
    """The Lightning ``Trainer`` config: afnext's own keys (``sequence_parallel``, ``ring_size``) taken out; with
    sequence parallelism the strategy is FSDP2 on a (data_parallel, sequence_parallel) mesh."""
    cfg = OmegaConf.to_container(trainer, resolve=True)
    sp, ring = int(cfg.pop("sequence_parallel", 1) or 1), int(cfg.pop("ring_size", 1) or 1)
    strategy = cfg.get("strategy")
    is_fsdp2 = isinstance(strategy, dict) and str(strategy.get("_target_", "")).endswith(
        "FSDP2Strategy"
    )
    if sp > 1 or ring > 1:
        if is_fsdp2:
            strategy.update(sequence_parallel=sp, ring_size=ring)
        elif strategy not in (None, "auto"):
            raise ConfigError(
                f"trainer.sequence_parallel={sp} needs the FSDP2 strategy (trainer=fsdp), not trainer.strategy="
                f"{strategy}"
            )
        else:
            cfg["strategy"] = {
                "_target_": "afnext.training.strategy.FSDP2Strategy",
                "sequence_parallel": sp,
                "ring_size": ring,
            }
    return OmegaConf.create(cfg)


def _set_dtypes(model: Any, cfg: DictConfig, trainer: Any) -> None:
    """Float32 master weights for what trains; a frozen LLM in ``llm.dtype`` (FSDP2: everything float32, its
    mixed-precision policy gathers the compute dtype)."""
    from afnext.llms.hf import resolve_dtype
    from afnext.training.precision import use_master_weights
    from afnext.training.strategy import FSDP2Strategy

    sharded = isinstance(trainer.strategy, FSDP2Strategy)
    frozen = resolve_dtype((cfg.get("llm") or {}).get("dtype"))
    if frozen is not None and not sharded:
        for param in model.llm.parameters():
            if not param.requires_grad and param.is_floating_point():
                param.data = param.data.to(frozen)
    use_master_weights(model, cfg.trainer.get("precision"), all_float32=sharded)


def _stages(cfg: DictConfig) -> list[Stage]:
    defaults = {
        "trainable": list(cfg.model.trainable),
        "lr": OmegaConf.to_container(cfg.optim.lr, resolve=True)
        if OmegaConf.is_config(cfg.optim.lr)
        else cfg.optim.lr,
        "max_audio_seconds": cfg.data.get("max_audio_seconds"),
        "max_length": cfg.data.get("max_length"),
        "max_steps": cfg.trainer.max_steps,
        "warmup_steps": cfg.optim.warmup_steps,
    }
    raw = OmegaConf.to_container(cfg.curriculum.stages, resolve=True)
    order = cfg.curriculum.get("order")
    order = list(order) if order is not None else None
    only = cfg.get("stage")
    if only is not None and not isinstance(only, str):
        only = [str(name) for name in only]
    return plan_stages(raw, defaults=defaults, only=only, order=order)


def train(cfg: DictConfig) -> Path:
    """Run every stage of ``cfg.curriculum`` (or ``cfg.stage`` alone); returns the final model folder."""
    import lightning.pytorch as pl
    from lightning.pytorch.utilities import rank_zero_only

    # Under DDP every rank runs this function; files are written by global rank 0 only.
    main_rank = rank_zero_only.rank == 0
    pl.seed_everything(int(cfg.seed), workers=True)
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if main_rank:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=False))
    all_stages = _stages(_without_stage(cfg))
    chosen = _stages(cfg)
    previous: Path | None = Path(cfg.init_from) if cfg.get("init_from") else None
    final: Path | None = None
    for index, stage in enumerate(all_stages):
        folder = stage_dir(run_dir, index, stage)
        if stage not in chosen:
            if is_done(folder):
                previous = folder / "model"
            continue
        if is_done(folder):
            console.print(
                f"[green]stage {stage.name}: done earlier[/] ({read_done(folder)['steps']} steps)"
            )
            previous = final = folder / "model"
            continue
        console.rule(f"stage {index + 1}/{len(all_stages)}: {stage.name}")
        console.print(
            f"trainable={list(stage.trainable)} lr={dict(stage.lr)} max_steps={stage.max_steps} "
            f"max_audio_seconds={stage.max_audio_seconds} max_length={stage.max_length}"
            + (f"\nnote: {stage.note}" if stage.note else "")
        )
        model = build_model(cfg, init_from=previous)
        module, datamodule, trainer = build_stage(cfg, stage, folder, model)
        last = folder / "checkpoints" / "last.ckpt"  # a file, or a link to FSDP2's sharded folder
        resume = last.exists()
        if resume:
            console.print(f"[cyan]resuming stage {stage.name} from {last}[/]")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
        finally:
            finish_logger(trainer.loggers)  # each stage is a W&B run of its own
        if trainer.interrupted:
            raise KeyboardInterrupt(f"stage {stage.name} interrupted; rerun the command to resume")
        if trainer.global_step < stage.max_steps:
            raise ConfigError(
                f"stage {stage.name} stopped at step {trainer.global_step} of {stage.max_steps}: the data ran "
                "out. Raise trainer.max_epochs or lower the stage's max_steps."
            )
        # The stage's end state, whatever the validation cadence: last.ckpt is where a resume starts.
        trainer.save_checkpoint(last)  # collective: every rank calls it, rank 0 writes
        export_stage_model(module.model, folder / "model", trainer)
        if trainer.is_global_zero:
            mark_done(folder, {"stage": stage.name, "steps": trainer.global_step})
        trainer.strategy.barrier("afnext_stage_done")  # the next stage loads this stage's model
        previous = final = folder / "model"
    if final is None:
        raise ConfigError("no stage ran; check curriculum.stages and stage=")
    if not main_rank:
        return final
    from afnext.storage import write_json

    write_json(run_dir / "final.json", {"model": str(final.resolve())})
    if cfg.get("export_hf"):
        from afnext.model import AudioLanguageModel

        AudioLanguageModel.from_pretrained(final).save_pretrained(run_dir / "hf", format="hf")
    console.print(f"[green]model:[/] {final}")
    return final


def export_stage_model(model: Any, path: Path, trainer: Any) -> None:
    """Write the stage's weights in afnext format, once: a sharded (FSDP2) model is gathered into one full
    state dict on rank 0 (a collective every rank takes part in), then rank 0 writes it."""
    from afnext.training.strategy import full_state_dict

    state = full_state_dict(model)
    if trainer.is_global_zero:
        model.save_pretrained(path, state_dict=state)


def _without_stage(cfg: DictConfig) -> DictConfig:
    copy = cfg.copy()
    with open_dict(copy):
        copy.stage = None
    return copy


def validate(cfg: DictConfig, checkpoint: str | Path) -> dict[str, float]:
    """Validation loss and answer accuracy of a saved model on ``cfg.data``'s validation split."""
    from afnext.model import AudioLanguageModel

    run_dir = run_dir_of(cfg)
    stage = _stages(cfg)[-1]
    model = AudioLanguageModel.from_pretrained(resolve_checkpoint(checkpoint))
    module, datamodule, trainer = build_stage(cfg, stage, run_dir / "validate", model)
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in (results[0] if results else {}).items()}
