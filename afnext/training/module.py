"""LightningModule around :class:`afnext.model.AudioLanguageModel`.

AdamW with one learning rate per trainable part (encoder, time embedding, connector, LLM, LoRA), linear
warmup then cosine decay (AF3's schedule), next-token loss on assistant turns only (the processor's labels)
averaged over the target tokens of each optimizer step (all micro-batches, all ranks), throughput logging, and
validation loss and greedy answers per duration bucket, summed over ranks.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from afnext.errors import ConfigError
from afnext.interop.components import COMPONENTS
from afnext.llms.loss import IGNORE_INDEX, shift_labels
from afnext.model import PARTS, AudioLanguageModel
from afnext.training.validation import DurationBuckets, ValidationTotals

__all__ = [
    "MODEL_INPUTS",
    "AudioLanguageModule",
    "prompt_batch",
    "warmup_cosine",
    "warmup_cosine_schedule",
]

MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "input_features",
    "input_features_mask",
    "labels",
)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int,
    min_lr_ratio: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup then cosine decay to ``min_lr_ratio`` of each group's learning rate (the ``scheduler``
    partial of ``conf/optim/adamw.yaml``)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(
            step, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio
        ),
    )


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier: linear warmup from 0, then cosine decay to ``min_lr_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def prompt_batch(
    batch: Mapping[str, Any], pad_token_id: int
) -> tuple[dict[str, Any], list[list[int]]]:
    """Cut each sample at its first labelled token: the prompt (left-padded, for ``generate``) and the target.

    Args:
        batch: A training batch (right-padded ``input_ids``, ``attention_mask``, ``labels`` ``(B, L)``,
            optional audio features).
        pad_token_id: Id that fills the padding.

    Returns:
        ``(inputs, targets)``: inputs for ``AudioLanguageModel.generate`` and each sample's first
        assistant turn as a list of ids (up to the first unlabelled token).
    """
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    prompts, targets = [], []
    for row in range(ids.shape[0]):
        labelled = (labels[row] != IGNORE_INDEX).nonzero()
        start = int(labelled[0, 0]) if len(labelled) else int(mask[row].sum())
        end = start
        while end < labels.shape[1] and labels[row, end] != IGNORE_INDEX:
            end += 1
        prompts.append(ids[row, :start][mask[row, :start].bool()])
        targets.append(labels[row, start:end].tolist())
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=ids.dtype, device=ids.device)
    attention = torch.zeros_like(input_ids)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = prompt
        attention[row, width - len(prompt) :] = 1
    inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention}
    for key in ("input_features", "input_features_mask"):
        if batch.get(key) is not None:
            inputs[key] = batch[key]
    return inputs, targets


class AudioLanguageModule(pl.LightningModule):
    """Trains an :class:`AudioLanguageModel` with the processor's batches.

    The training loss is the mean over the target tokens of the whole optimizer step: every micro-batch of a
    gradient-accumulation window on every data-parallel rank. transformers' ``Trainer`` gets there by reading the
    window's batches ahead (``num_items_in_batch``); here each micro-batch's loss is its summed token losses over
    a fixed scale (the previous step's tokens per micro-batch, the same on every rank), and before the optimizer
    step the gradients are rescaled once by the true global count, all-reduced with the loss sum: exact, however
    uneven the micro-batches, at one small all-reduce per step. ``train/loss`` is that global mean.

    Every rank runs the same modules in the same order in every step, so no collective waits forever: a batch
    whose samples were all skipped becomes a one-token placeholder with no target (loss 0, zero gradients), and
    a batch without audio runs the audio path on one silent window times 0 (``idle_audio``) when there is more
    than one rank.

    Args:
        model: The built model.
        trainable: Parts that train (declared, see ``AudioLanguageModel.set_trainable``).
        lr: Learning rate per part (``{"connector": 1e-3, "llm": 1.5e-5}``); ``default`` for parts not
            listed.
        optimizer: ``params -> Optimizer`` (a partial: ``torch.optim.AdamW`` with its arguments); its
            ``weight_decay`` applies to weights of two or more dimensions, biases and norms get none.
            Default: AdamW without weight decay.
        scheduler: ``(optimizer, total_steps=, warmup_steps=) -> LRScheduler`` (a partial); default: linear
            warmup then cosine decay to 0.1 (:func:`warmup_cosine_schedule`).
        warmup_steps: Linear warmup steps.
        activation_checkpointing: Recompute activations in the backward (encoder and LLM).
        generate_batches: Validation batches per rank answered greedily and scored (0: loss only); the
            validation batches come spread over the duration range, so the first ones are too.
        max_new_tokens: Tokens generated per validation answer.
        scorer: ``(prediction, reference, question, choices) -> bool`` (``choices``: the manifest's options,
            empty for open questions); default: :func:`default_scorer`, as ``afnext.evaluation.qa`` scores.
        duration_buckets: Edges in seconds of the duration buckets validation metrics are kept for.
    """

    def __init__(
        self,
        model: AudioLanguageModel,
        *,
        trainable: Sequence[str] = ("encoder", "connector", "llm"),
        lr: Mapping[str, float] | float = 1e-4,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        warmup_steps: int = 0,
        activation_checkpointing: bool = False,
        generate_batches: int = 1,
        max_new_tokens: int = 32,
        scorer: Any = None,
        duration_buckets: Sequence[float] = (30.0, 120.0, 600.0),
    ) -> None:
        super().__init__()
        self.model = model
        self.trainable = tuple(trainable)
        model.set_trainable(self.trainable)
        self.lr = {"default": float(lr)} if isinstance(lr, (int, float)) else dict(lr)
        unknown = [k for k in self.lr if k not in (*PARTS, "default")]
        if unknown:
            raise ConfigError(f"optim.lr has unknown parts {unknown}; use {(*PARTS, 'default')}")
        self.optimizer_factory = optimizer or functools.partial(torch.optim.AdamW, weight_decay=0.0)
        self.scheduler_factory = scheduler or functools.partial(
            warmup_cosine_schedule, min_lr_ratio=0.1
        )
        self.warmup_steps = warmup_steps
        self.generate_batches, self.max_new_tokens = generate_batches, max_new_tokens
        self.scorer = scorer or default_scorer
        if activation_checkpointing:
            self._enable_activation_checkpointing()
        self.buckets = DurationBuckets(duration_buckets)
        self.val_totals = ValidationTotals(self.buckets)
        self.predictions: list[dict[str, Any]] = []
        self._step_start: float | None = None
        # Loss bookkeeping of the current accumulation window (see the class docstring).
        self.token_scale = 1.0
        self._window: torch.Tensor | None = (
            None  # (summed token losses, target tokens), on the device
        )
        self.save_hyperparameters(ignore=["model", "scorer", "optimizer", "scheduler"])

    # ------------------------------------------------------------------------------------------
    def _enable_activation_checkpointing(self) -> None:
        """Each component that can recompute its activations does so (its own ``enable_activation_checkpointing``)."""
        for name in COMPONENTS:
            part = getattr(self.model, name)
            if part is not None and hasattr(part, "enable_activation_checkpointing"):
                part.enable_activation_checkpointing()

    def configure_model(self) -> None:
        """Shard the model when the strategy is FSDP2 (Lightning calls this once the processes exist)."""
        from afnext.training.strategy import FSDP2Strategy

        strategy = self._trainer.strategy if self._trainer is not None else None
        if isinstance(strategy, FSDP2Strategy):
            group = strategy.sequence_group()
            if group is not None and self.model.sequence_group is None:
                from afnext.llms.sequence_parallel import check_heads

                heads = int(self.model.llm.config.num_attention_heads)
                check_heads(heads, group.ulysses_size, type(self.model.llm.base).__name__)
                self.model.sequence_group = group
                self.model.llm.use_sequence_parallel_attention()
            strategy.shard(self.model)

    def part_lr(self, part: str) -> float:
        if part in self.lr:
            return float(self.lr[part])
        if "default" in self.lr:
            return float(self.lr["default"])
        raise ConfigError(f"optim.lr has no entry for trainable part {part!r} and no 'default'")

    def configure_optimizers(self) -> Any:
        """The optimizer partial over one parameter group per trainable part (and one without weight decay for
        its biases and norms), and the schedule partial stepped every optimizer step."""
        factory = self.optimizer_factory
        keywords = dict(getattr(factory, "keywords", {}) or {})
        weight_decay = float(keywords.get("weight_decay", 0.0))
        groups = []
        for part in PARTS:
            named = [(n, p) for n, p in self.model.part_parameters(part) if p.requires_grad]
            if not named:
                continue
            decay = [p for n, p in named if p.ndim >= 2]
            no_decay = [p for n, p in named if p.ndim < 2]
            lr = self.part_lr(part)
            for params, wd, tag in ((decay, weight_decay, ""), (no_decay, 0.0, "_no_decay")):
                if params:
                    groups.append(
                        {"params": params, "lr": lr, "weight_decay": wd, "name": part + tag}
                    )
        if not groups:
            raise ConfigError(
                f"nothing to train: trainable={list(self.trainable)} has no parameters"
            )
        extra = {}
        if getattr(factory, "func", None) is torch.optim.AdamW and "fused" not in keywords:
            extra["fused"] = self.device.type == "cuda"
        optimizer = factory(groups, **extra)
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        schedule = self.scheduler_factory(
            optimizer, total_steps=total, warmup_steps=self.warmup_steps
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------------------------------------
    @property
    def _world(self) -> int:
        return self._trainer.world_size if self._trainer is not None else 1

    @staticmethod
    def _empty(batch: Mapping[str, Any]) -> bool:
        """Every sample of the batch was skipped (counted by the datamodule)."""
        return batch.get("num_samples", batch["input_ids"].shape[0]) == 0

    def model_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The model's inputs of a batch: a one-token placeholder without targets for an all-skipped batch, and
        ``idle_audio`` when several ranks must run the same modules (see the class docstring)."""
        if self._empty(batch):
            pad = self.model.llm.tokenizer.pad_token_id
            ids = torch.full((1, 1), pad, dtype=torch.long, device=self.device)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            if "labels" in batch:
                inputs["labels"] = torch.full_like(ids, IGNORE_INDEX)
        else:
            inputs = {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}
        inputs["idle_audio"] = self._world > 1
        return inputs

    def forward(self, **batch: Any) -> Any:
        return self.model(**self.model_inputs(batch))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        inputs = self.model_inputs(batch)
        out = self.model(**inputs, num_items_in_batch=self.token_scale)
        # The targets this rank's loss covers (under sequence parallelism, its share of the row's).
        targets = getattr(out, "num_targets", None)
        if targets is None:
            targets = (shift_labels(inputs["labels"]) != IGNORE_INDEX).sum()
        step = torch.stack([out.loss.detach().double() * self.token_scale, targets.double()])
        self._window = step if self._window is None else self._window + step  # no host sync here
        if self._step_start is not None and not self._empty(batch):
            size = batch["input_ids"].shape[0]
            elapsed = max(time.perf_counter() - self._step_start, 1e-9)
            # Per rank: the ranks of a sequence-parallel group share one row, each computing 1/N of it.
            group = getattr(self.model, "sequence_group", None)
            share = 1.0 / group.size if group is not None else 1.0
            tokens = float(batch["attention_mask"].sum()) * share
            self.log("train/tokens_per_s", tokens / elapsed, batch_size=size)
            if "audio_seconds" in batch:
                seconds = float(torch.as_tensor(batch["audio_seconds"]).sum()) * share
                self.log("train/audio_s_per_s", seconds / elapsed, prog_bar=True, batch_size=size)
        return out.loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Turn the window's gradients into those of the mean over its global target tokens; log the loss."""
        import torch.distributed as dist

        window, self._window = self._window, None
        if window is None:
            window = torch.zeros(2, dtype=torch.float64, device=self.device)
        if self._world > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(window)
        loss_sum, tokens = (float(x) for x in window.cpu())
        replicas = self.trainer.accumulate_grad_batches * self._world
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if tokens > 0:
            # Lightning divided each micro-batch's loss by the accumulation steps and DDP / FSDP average the
            # gradients over ranks: undo both, and the fixed scale, and divide by the true count.
            factor = replicas * self.token_scale / tokens
            for param in params:
                if param.grad is not None:
                    param.grad.mul_(factor)
            self.step_loss = loss_sum / tokens
            self.log("train/loss", self.step_loss, prog_bar=True)
            self.token_scale = max(1.0, tokens / replicas)
        else:  # nothing to learn from in this step on any rank: no update (AdamW skips grad None)
            self.step_loss = float("nan")
            for param in params:
                param.grad = None
        self.log("train/target_tokens", tokens)
        for group in optimizer.param_groups:
            if not group["name"].endswith("_no_decay"):
                self.log(f"lr/{group['name']}", group["lr"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["afnext_token_scale"] = self.token_scale

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.token_scale = float(checkpoint.get("afnext_token_scale", 1.0))

    # ------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.predictions = []
        self.val_totals = ValidationTotals(self.buckets)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.model(**self.model_inputs(batch), return_row_losses=True)
        if not self._empty(batch):
            durations = _durations(batch)
            self.val_totals.add_losses(
                durations, out.row_loss_sums, out.row_targets, count_samples=self._first_of_sequence
            )
        if batch_idx < self.generate_batches:
            self._answer(batch)
        return out.loss

    @property
    def _first_of_sequence(self) -> bool:
        """This rank counts its batch's samples (in a sequence-parallel group, only the group's first does)."""
        group = getattr(self.model, "sequence_group", None)
        return group is None or group.rank == 0

    def _sharded(self) -> bool:
        from torch.distributed.fsdp import FSDPModule

        return isinstance(self.model, FSDPModule)

    @torch.no_grad()
    def _answer(self, batch: Mapping[str, Any]) -> None:
        """Greedy answers to the batch's first questions, scored. Under FSDP2 every rank generates in step
        (``synced_gpus``) and runs the audio path, with a placeholder prompt when its batch is empty."""
        tokenizer = self.model.llm.tokenizer
        sharded = self._sharded()
        empty = self._empty(batch)
        if empty and not sharded:
            return
        if empty:
            ids = torch.full((1, 1), tokenizer.pad_token_id, dtype=torch.long, device=self.device)
            inputs, targets = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, []
        else:
            inputs, targets = prompt_batch(batch, tokenizer.pad_token_id)
        if sharded:
            self.model.unshard()  # the root unit's weights (embeddings, connector, LM head) for generate
            if inputs.get("input_features") is None:
                self.model.idle_audio_term()
        try:
            generated = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, synced_gpus=sharded
            )[:, inputs["input_ids"].shape[1] :]
        finally:
            if sharded:
                self.model.reshard()
        if (
            empty or not self._first_of_sequence
        ):  # the group's other ranks answered the same questions
            return
        predictions = tokenizer.batch_decode(generated, skip_special_tokens=True)
        references = [tokenizer.decode(t, skip_special_tokens=True) for t in targets]
        n = len(predictions)
        ids = batch.get("ids") or [str(i) for i in range(n)]
        sounds = batch.get("sounds") or [None] * n
        questions = batch.get("questions") or [""] * n
        choices = batch.get("choices") or [[]] * n
        durations = _durations(batch)
        correct = []
        for i, (pred, ref) in enumerate(zip(predictions, references)):
            right = bool(self.scorer(pred, ref, questions[i], choices[i]))
            correct.append(right)
            self.predictions.append(
                {
                    "id": ids[i],
                    "sound": sounds[i],
                    "question": questions[i],
                    "prediction": pred.strip(),
                    "reference": ref.strip(),
                    "correct": right,
                    "seconds": durations[i],
                }
            )
        self.val_totals.add_answers(durations, correct)

    def on_validation_epoch_end(self) -> None:
        """Sum the metrics over ranks and log them; gather the answered samples on rank 0."""
        import torch.distributed as dist

        self.val_totals.all_reduce(self.device)
        for name, value in self.val_totals.metrics().items():
            # Already global (and equal on every rank); sync_dist only tells Lightning so.
            self.log(name, value, prog_bar=name in ("val/loss", "val/accuracy"), sync_dist=True)
        if self._world > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.predictions)
            self.predictions = [row for part in gathered for row in part or []]


def _durations(batch: Mapping[str, Any]) -> list[float]:
    """Seconds of audio of each sample of a batch (0 when the collator did not say)."""
    n = len(batch.get("ids") or []) or int(batch["input_ids"].shape[0])
    return [float(x) for x in batch.get("durations") or [0.0] * n]


def default_scorer(
    prediction: str, reference: str, question: str = "", choices: Sequence[str] = ()
) -> bool:
    """Is a free-text prediction right? With ``choices``, the option each answer picks (letter or words,
    :func:`afnext.reasoning.metrics.extract_choice`); otherwise numbers within 0.5, yes / no, or the
    reference's words in the prediction. The same rules as ``afnext.evaluation.qa.evaluate_manifest``."""
    from afnext.reasoning.metrics import answer_correct, final_answer

    return bool(answer_correct(final_answer(prediction), final_answer(reference), list(choices)))
