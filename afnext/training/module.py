"""LightningModule around :class:`afnext.model.AudioLanguageModel`.

AdamW with one learning rate per trainable part (encoder, time embedding, connector, LLM, LoRA), linear
warmup then cosine decay (AF3's schedule), next-token loss on assistant turns only (the processor's labels),
throughput logging, and greedy answers on validation batches scored against the reference answers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from afnext.errors import ConfigError
from afnext.model import PARTS, AudioLanguageModel

__all__ = ["MODEL_INPUTS", "AudioLanguageModule", "prompt_batch", "warmup_cosine"]

MODEL_INPUTS = ("input_ids", "attention_mask", "input_features", "input_features_mask", "labels")
IGNORE_INDEX = -100


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

    Args:
        model: The built model.
        trainable: Parts that train (declared, see ``AudioLanguageModel.set_trainable``).
        lr: Learning rate per part (``{"connector": 1e-3, "llm": 1.5e-5}``); ``default`` for parts not
            listed.
        weight_decay: AdamW weight decay (not applied to biases and norms).
        betas: AdamW betas.
        warmup_steps: Linear warmup steps.
        min_lr_ratio: Cosine floor as a fraction of each part's learning rate.
        activation_checkpointing: Recompute activations in the backward (encoder and LLM).
        generate_batches: Validation batches answered greedily and scored (0: loss only).
        max_new_tokens: Tokens generated per validation answer.
        scorer: ``(prediction, reference, question, choices) -> bool`` (``choices``: the manifest's options,
            empty for open questions); default: :func:`default_scorer`, as ``afnext.evaluation.qa`` scores.
    """

    def __init__(
        self,
        model: AudioLanguageModel,
        *,
        trainable: Sequence[str] = ("encoder", "connector", "llm"),
        lr: Mapping[str, float] | float = 1e-4,
        weight_decay: float = 0.0,
        betas: Sequence[float] = (0.9, 0.999),
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.1,
        activation_checkpointing: bool = False,
        generate_batches: int = 1,
        max_new_tokens: int = 32,
        scorer: Any = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.trainable = tuple(trainable)
        model.set_trainable(self.trainable)
        self.lr = {"default": float(lr)} if isinstance(lr, (int, float)) else dict(lr)
        unknown = [k for k in self.lr if k not in (*PARTS, "default")]
        if unknown:
            raise ConfigError(f"optim.lr has unknown parts {unknown}; use {(*PARTS, 'default')}")
        self.weight_decay, self.betas = weight_decay, tuple(betas)
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio
        self.generate_batches, self.max_new_tokens = generate_batches, max_new_tokens
        self.scorer = scorer or default_scorer
        if activation_checkpointing:
            self._enable_activation_checkpointing()
        self.predictions: list[dict[str, Any]] = []
        self._step_start: float | None = None
        self.save_hyperparameters(ignore=["model", "scorer"])

    # ------------------------------------------------------------------------------------------
    def _enable_activation_checkpointing(self) -> None:
        kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
        for module in (getattr(self.model.encoder, "tower", None), self.model.llm.base):
            if module is not None and getattr(module, "supports_gradient_checkpointing", False):
                module.gradient_checkpointing_enable(**kwargs)

    def part_lr(self, part: str) -> float:
        if part in self.lr:
            return float(self.lr[part])
        if "default" in self.lr:
            return float(self.lr["default"])
        raise ConfigError(f"optim.lr has no entry for trainable part {part!r} and no 'default'")

    def configure_optimizers(self) -> Any:
        groups = []
        for part in PARTS:
            named = [(n, p) for n, p in self.model.part_parameters(part) if p.requires_grad]
            if not named:
                continue
            decay = [p for n, p in named if p.ndim >= 2]
            no_decay = [p for n, p in named if p.ndim < 2]
            lr = self.part_lr(part)
            for params, wd, tag in ((decay, self.weight_decay, ""), (no_decay, 0.0, "_no_decay")):
                if params:
                    groups.append(
                        {"params": params, "lr": lr, "weight_decay": wd, "name": part + tag}
                    )
        if not groups:
            raise ConfigError(
                f"nothing to train: trainable={list(self.trainable)} has no parameters"
            )
        fused = self.device.type == "cuda"
        optimizer = torch.optim.AdamW(groups, betas=self.betas, fused=fused)
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: warmup_cosine(
                step,
                warmup_steps=self.warmup_steps,
                total_steps=total,
                min_lr_ratio=self.min_lr_ratio,
            ),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------------------------------------
    def forward(self, **batch: Any) -> Any:
        return self.model(**{k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None})

    def _log_batch_stats(self, batch: Mapping[str, Any], prefix: str) -> None:
        size = batch["input_ids"].shape[0]
        tokens = float(batch["attention_mask"].sum())
        self.log(f"{prefix}/tokens", tokens, reduce_fx="sum", batch_size=size)
        if "audio_seconds" in batch:
            seconds = float(torch.as_tensor(batch["audio_seconds"]).sum())
            self.log(f"{prefix}/audio_seconds", seconds, reduce_fx="sum", batch_size=size)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    @staticmethod
    def _empty(batch: Mapping[str, Any]) -> bool:
        """Every sample of the batch was skipped (counted by the datamodule): nothing to compute."""
        return batch.get("num_samples", batch["input_ids"].shape[0]) == 0

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self._empty(batch):
            return None  # Lightning skips the backward and optimizer step
        out = self(**batch)
        size = batch["input_ids"].shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=size)
        if self._step_start is not None:
            elapsed = max(time.perf_counter() - self._step_start, 1e-9)
            tokens = float(batch["attention_mask"].sum())
            self.log("train/tokens_per_s", tokens / elapsed, batch_size=size)
            if "audio_seconds" in batch:
                seconds = float(torch.as_tensor(batch["audio_seconds"]).sum())
                self.log("train/audio_s_per_s", seconds / elapsed, prog_bar=True, batch_size=size)
        return out.loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        for group in optimizer.param_groups:
            if not group["name"].endswith("_no_decay"):
                self.log(f"lr/{group['name']}", group["lr"])

    def on_validation_epoch_start(self) -> None:
        self.predictions = []

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self._empty(batch):
            return None
        out = self(**batch)
        size = batch["input_ids"].shape[0]
        self.log("val/loss", out.loss, prog_bar=True, batch_size=size, sync_dist=True)
        if batch_idx < self.generate_batches:
            self._answer(batch)
        return out.loss

    @torch.no_grad()
    def _answer(self, batch: Mapping[str, Any]) -> None:
        tokenizer = self.model.llm.tokenizer
        inputs, targets = prompt_batch(batch, tokenizer.pad_token_id)
        generated = self.model.generate(
            **inputs, max_new_tokens=self.max_new_tokens, do_sample=False
        )[:, inputs["input_ids"].shape[1] :]
        predictions = tokenizer.batch_decode(generated, skip_special_tokens=True)
        references = [tokenizer.decode(t, skip_special_tokens=True) for t in targets]
        n = len(predictions)
        ids = batch.get("ids") or [str(i) for i in range(n)]
        sounds = batch.get("sounds") or [None] * n
        questions = batch.get("questions") or [""] * n
        choices = batch.get("choices") or [[]] * n
        for i, (pred, ref) in enumerate(zip(predictions, references)):
            self.predictions.append(
                {
                    "id": ids[i],
                    "sound": sounds[i],
                    "question": questions[i],
                    "prediction": pred.strip(),
                    "reference": ref.strip(),
                    "correct": bool(self.scorer(pred, ref, questions[i], choices[i])),
                }
            )

    def on_validation_epoch_end(self) -> None:
        if self.predictions:
            accuracy = sum(p["correct"] for p in self.predictions) / len(self.predictions)
            self.log("val/accuracy", accuracy, prog_bar=True, batch_size=len(self.predictions))


def default_scorer(
    prediction: str, reference: str, question: str = "", choices: Sequence[str] = ()
) -> bool:
    """Is a free-text prediction right? With ``choices``, the option each answer picks (letter or words,
    :func:`afnext.reasoning.metrics.extract_choice`); otherwise numbers within 0.5, yes / no, or the
    reference's words in the prediction. The same rules as ``afnext.evaluation.qa.evaluate_manifest``."""
    from afnext.reasoning.metrics import answer_correct, final_answer

    return bool(answer_correct(final_answer(prediction), final_answer(reference), list(choices)))
