"""Validation of a GRPO stage (a mixin of :class:`afnext.training.grpo.GRPOModule`).

The validation prompts are answered greedily (the first ``optim.module.generate_batches`` batches per rank, as SFT
validation does) and scored two ways: by the answer rule of ``make demo`` and SFT validation (``val/accuracy``, per
duration bucket) and by the stage's rewards (``val/reward``, ``val/rewards/<name>``). ``val/loss`` is the loss of
the reference answers where the validation lines have them (AF3-style lines); GRPO prompt lines (``afnext data
build mode=grpo``) have none, and the stage's best checkpoint is chosen by ``val/reward``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from afnext.llms.loss import IGNORE_INDEX
from afnext.training.module import AudioLanguageModule, prompt_batch
from afnext.training.rewards.base import RewardSample, RewardSet

__all__ = ["GRPOValidation"]


class GRPOValidation(AudioLanguageModule):
    """Validation hooks of :class:`afnext.training.grpo.GRPOModule` (see the module docstring), which sets
    ``reward_set`` and implements :meth:`_samples` and :meth:`gathered`."""

    reward_set: RewardSet

    def _samples(self, batch: Mapping[str, Any], split: str) -> list[RewardSample]:
        raise NotImplementedError

    def gathered(self) -> Any:
        raise NotImplementedError

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> Any:
        """The answers' loss where the lines have answers, and greedy answers scored for the first
        ``generate_batches`` batches."""
        labels = batch.get("labels")
        if labels is not None and bool((labels != IGNORE_INDEX).any()):
            return super().validation_step(batch, batch_idx)
        if batch_idx < self.generate_batches:
            self._answer(batch)
        return None

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_rewards: dict[str, float] = {}

    @torch.no_grad()
    def _answer(self, batch: Mapping[str, Any]) -> None:
        """Greedy answers to the batch's prompts, scored by the answer rule and the stage's rewards."""
        if self._empty(batch):
            return
        model = self.model
        tokenizer = model.llm.tokenizer
        inputs, _ = prompt_batch(batch, tokenizer.pad_token_id)
        with self.gathered():
            generated = model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                synced_gpus=self._sharded(),
            )[:, inputs["input_ids"].shape[1] :]
        predictions = [
            t.strip() for t in tokenizer.batch_decode(generated, skip_special_tokens=True)
        ]
        samples = self._samples(batch, "val")
        scores = self.reward_set.score(samples, predictions)
        sounds = batch.get("sounds") or [None] * len(samples)
        correct = []
        for i, (prediction, sample) in enumerate(zip(predictions, samples)):
            right = bool(
                self.scorer(prediction, sample.answer, sample.question, list(sample.choices))
            )
            correct.append(right)
            self.predictions.append(
                {
                    "id": sample.id,
                    "sound": sounds[i],
                    "question": sample.question,
                    "prediction": prediction,
                    "reference": sample.answer,
                    "correct": right,
                    "seconds": sample.duration,
                    "reward": float(scores.total[i]),
                }
            )
        self.val_totals.add_answers([float(s.duration or 0.0) for s in samples], correct)
        sums = self._val_rewards
        sums["count"] = sums.get("count", 0.0) + len(predictions)
        sums["reward"] = sums.get("reward", 0.0) + float(scores.total.sum())
        for name, values in scores.components.items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())

    def on_validation_epoch_end(self) -> None:
        """Log ``val/reward`` and ``val/rewards/<name>`` (summed over ranks) beside SFT validation's metrics."""
        super().on_validation_epoch_end()
        import torch.distributed as dist

        names = ["count", "reward", *self.reward_set.names]
        sums = getattr(self, "_val_rewards", {})
        totals = torch.tensor([sums.get(n, 0.0) for n in names], dtype=torch.float64)
        if self._world > 1 and dist.is_initialized():
            totals = totals.to(self.device)
            dist.all_reduce(totals)
        count = float(totals[0])
        if count:
            self.log("val/reward", float(totals[1]) / count, sync_dist=True)
            for name, value in zip(names[2:], totals[2:].tolist()):
                self.log(f"val/rewards/{name}", value / count, sync_dist=True)
