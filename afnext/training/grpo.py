"""Group relative policy optimisation (GRPO) as a Lightning module: an ``objective: grpo`` curriculum stage.

Each training step takes one batch of prompts from the stage's data (AF3-style manifest lines: a prompt plus what
the rewards need, e.g. ``answer``, ``choices``, ``timeline``) and

1. samples ``G`` completions per prompt with the rollout engine (in-process by default: KV-cached, seeded by
   the run's seed, the step and the rank, so a resumed stage samples what the interrupted one would have);
2. scores them with the stage's weighted rewards (:mod:`afnext.training.rewards`) and turns the totals into
   advantages relative to each prompt's group;
3. records the log-probabilities of the sampling policy (when the rollout feeds more than one update) and of the
   frozen reference (``beta > 0``: a copy of the start weights; with LoRA the same model with its adapters off);
4. takes ``num_iterations x steps_per_rollout`` optimizer steps on the clipped objective
   (:mod:`afnext.training.grpo_loss`), each over a minibatch of the completions.

Optimisation is manual (``automatic_optimization = False``): the steps happen inside one ``training_step``, and
Lightning counts each ``optimizer.step()``, so ``trainer.max_steps``, the schedule, gradient clipping (done here:
Lightning's own clipping refuses manual optimisation), checkpoints, resuming and loggers work as in SFT; a
checkpoint always falls between two rollouts. Strategies: one device, DDP, and FSDP2 (``trainer=fsdp``: the
rollout gathers the root's weights for generation and decodes in step on every rank; the log-probabilities go
through the model's own ``forward``, see :mod:`afnext.training.grpo_logps`). Dropout is off throughout (the model stays in eval mode), as TRL
disables it, so the ratio is exactly 1 on the policy that sampled. Validation answers the validation prompts
greedily and scores them with the stage's rewards (``val/reward``, ``val/rewards/<name>``) and, as SFT validation
does, the answer rule of ``make demo`` (``val/accuracy``); ``val/loss`` is the answers' loss where the
validation lines have them.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from afnext.errors import ConfigError
from afnext.training.grpo_logging import completion_rows, write_completion_table
from afnext.training.grpo_logps import completion_logps
from afnext.training.grpo_loss import LossStats, group_advantages, policy_loss
from afnext.training.grpo_settings import GRPOSettings
from afnext.training.grpo_validation import GRPOValidation
from afnext.training.module import prompt_batch
from afnext.training.rewards.base import RewardSample, RewardSet
from afnext.training.rollout import (
    InProcessEngine,
    Rollout,
    RolloutPrompts,
    rollout_seed,
    window_owners,
)

__all__ = ["GRPOModule", "Rollout", "rollout_seed"]


class GRPOModule(GRPOValidation):
    """Trains an :class:`afnext.model.AudioLanguageModel` with GRPO (see the module docstring).

    Args:
        model: The built model (the stage's start weights).
        settings: The stage's :class:`GRPOSettings`.
        rewards: The stage's weighted :class:`RewardSet`.
        engine: A :class:`afnext.training.rollout.RolloutEngine`; None: :class:`InProcessEngine` on ``model``.
        gradient_clip_val: Clip the gradient norm to this before each step (None / 0: no clipping).
        seed: Seeds the rollouts (:func:`rollout_seed`).
        **kwargs: :class:`AudioLanguageModule`'s (``trainable``, ``lr``, ``optimizer``, ``scheduler``,
            ``warmup_steps``, ``generate_batches``, ``max_new_tokens`` for validation answers, ...).

    Raises:
        ConfigError: ``beta > 0`` with LoRA while other parts than the adapters train (the reference would not
            be the start policy).
    """

    def __init__(
        self,
        model: Any,
        *,
        settings: GRPOSettings,
        rewards: RewardSet,
        engine: Any = None,
        gradient_clip_val: float | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        for store in (self._hparams, self._hparams_initial):  # objects: kept as plain values below
            for key in ("settings", "rewards", "engine"):
                store.pop(key, None)
            store["grpo"] = copy.deepcopy(dataclasses.asdict(settings))
        self.automatic_optimization = False
        self.settings, self.reward_set = settings, rewards
        self.engine = engine if engine is not None else InProcessEngine(model)
        self.gradient_clip_val = float(gradient_clip_val or 0.0)
        self.seed = int(settings.seed if settings.seed is not None else seed)
        self.reference_mode = "none"
        reference = None
        if settings.beta > 0:
            if getattr(model.llm, "has_lora", False):
                if set(self.trainable) - {"lora"}:
                    raise ConfigError(
                        f"grpo.beta={settings.beta} with LoRA takes the LLM with its adapters off as the reference, "
                        f"which is the start policy only when just the adapters train; trainable is "
                        f"{list(self.trainable)}: set it to [lora] or grpo.beta=0"
                    )
                self.reference_mode = "adapters_off"
            else:
                reference = copy.deepcopy(model).eval().requires_grad_(False)
                self.reference_mode = "copy"
        # Not a registered submodule: it stays out of checkpoints and optimizers (rebuilt from the start weights).
        object.__setattr__(self, "_reference", reference)
        self._records: dict[str, dict[str, Any]] = {}
        self._root_ready = False  # FSDP2: the root module has run its first forward

    @property
    def reference(self) -> Any:
        """The frozen reference model (a copy), or None (``beta == 0``, or LoRA with its adapters off)."""
        return self._reference

    # ------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Shard the policy (FSDP2), and the frozen reference copy the same way: each rank keeps 1/N of it
        (an unsharded copy of an 8B model in float32 is 33 GB on every GPU)."""
        super().configure_model()
        from afnext.training.strategy import FSDP2Strategy

        strategy = self._trainer.strategy if self._trainer is not None else None
        if self.reference is not None and isinstance(strategy, FSDP2Strategy):
            strategy.shard(self.reference)

    def on_fit_start(self) -> None:
        from torch.distributed.fsdp import FSDPModule

        if self.reference is not None and not isinstance(self.reference, FSDPModule):
            self.reference.to(self.device)  # a sharded one already lies on the mesh's device
        if self.reference_mode != "none":
            from lightning.pytorch.utilities import rank_zero_info

            where = (
                f"a frozen copy sharded over {self.trainer.world_size} ranks (FSDP2)"
                if isinstance(self.reference, FSDPModule)
                else "a frozen copy on every rank"
                if self.reference is not None
                else "the LLM with its LoRA adapters off (no copy)"
            )
            rank_zero_info(f"GRPO reference policy (beta={self.settings.beta}): {where}")
        if isinstance(self.engine, InProcessEngine):
            self.engine.synced_gpus = self._sharded()  # FSDP2: every rank takes every decoding step

    @contextmanager
    def gathered(self) -> Iterator[None]:
        """Generation outside the model's own ``forward``: under FSDP2 the root's weights (embeddings,
        connector, LM head) are gathered for it, then sharded again."""
        sharded = self._sharded()
        if sharded and not self._root_ready:
            # FSDP2 initialises its units from the root's first forward, so the root runs one (a one-token
            # prompt; the audio path on silence, as every rank does) before generation calls its parts.
            pad = self.model.llm.tokenizer.pad_token_id
            ids = torch.full((1, 1), pad, dtype=torch.long, device=self.device)
            with torch.no_grad():
                self.model(input_ids=ids, attention_mask=torch.ones_like(ids), idle_audio=True)
            self._root_ready = True
        if sharded:
            self.model.unshard()
        try:
            yield
        finally:
            if sharded:
                self.model.reshard()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the learning rates (the SFT token rescaling does not apply: the GRPO loss is already
        normalised)."""
        for group in optimizer.param_groups:
            if not group["name"].endswith("_no_decay"):
                self.log(f"lr/{group['name']}", group["lr"])

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["afnext_grpo"] = {"rewards": self.reward_set.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("afnext_grpo") or {}
        self.reward_set.load_state_dict(state.get("rewards") or {})

    # ------------------------------------------------------------------------------------------
    def _samples(self, batch: Mapping[str, Any], split: str) -> list[RewardSample]:
        """The :class:`RewardSample` of each sample of a batch, from its manifest line (found by ``file:line``)."""
        if split not in self._records:
            dataset = self.trainer.datamodule.dataset(split)
            self._records[split] = {e.where: e for e in dataset.entries if hasattr(e, "messages")}
        records = self._records[split]
        seconds = [float(x) for x in batch.get("durations") or []]
        out = []
        for i, where in enumerate(batch["where"]):
            audio = seconds[i] if i < len(seconds) else None
            out.append(RewardSample.from_record(records[where], audio_seconds=audio))
        return out

    def _logps(
        self, model: Any, rollout: Rollout, rows: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities and entropies ``(m, C)`` of the completions ``rows`` under ``model``
        (:func:`afnext.training.grpo_logps.completion_logps`)."""
        return completion_logps(
            model,
            rollout,
            rows,
            num_generations=self.settings.num_generations,
            temperature=self.settings.temperature,
            chunk_size=self.settings.logprob_chunk_size,
            idle_audio=self._world > 1,
        )

    def _micro_batches(self, rows: torch.Tensor) -> list[torch.Tensor]:
        size = self.settings.micro_batch_size or rows.numel()
        return list(torch.split(rows, size))

    @torch.no_grad()
    def _frozen_logps(self, rollout: Rollout, reference: bool) -> torch.Tensor:
        rows = torch.arange(rollout.size, device=rollout.completion_ids.device)
        if not reference:
            model, context = self.model, nullcontext()
        elif self.reference_mode == "adapters_off":
            model, context = self.model, self.model.llm.model.disable_adapter()
        else:
            model, context = self.reference, nullcontext()
        with context:
            return torch.cat([self._logps(model, rollout, r)[0] for r in self._micro_batches(rows)])

    @torch.no_grad()
    def make_rollout(self, batch: Mapping[str, Any]) -> Rollout:
        """Sample, decode and score one batch of prompts (see the module docstring, steps 1-3)."""
        s = self.settings
        tokenizer = self.model.llm.tokenizer
        inputs, _ = prompt_batch(batch, tokenizer.pad_token_id)
        prompts = RolloutPrompts(
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs.get("input_features"),
            inputs.get("input_features_mask"),
            window_owners(self.model, inputs["input_ids"], inputs.get("input_features_mask")),
        )
        samples = self._samples(batch, "train")
        step, rank = int(self.global_step), int(self.global_rank)
        seed = rollout_seed(self.seed, step, rank)
        self.model.eval()
        with self.gathered():
            gen = self.engine.generate(
                prompts,
                num_generations=s.num_generations,
                max_new_tokens=s.max_new_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.top_k,
                seed=seed,
            )
        # The completion's text without its end-of-turn token.
        lengths = gen.completion_mask.sum(1).long() - (~gen.truncated).long()
        texts = [
            tokenizer.decode(ids[:n], skip_special_tokens=True).strip()
            for ids, n in zip(gen.completion_ids.tolist(), lengths.tolist())
        ]
        owners = [samples[i // s.num_generations] for i in range(len(texts))]
        scores = self.reward_set.score(owners, texts)
        advantages, zero_std = group_advantages(
            scores.total, s.num_generations, scale=s.scale_rewards
        )
        loss_mask = gen.completion_mask
        if s.mask_truncated_completions:
            loss_mask = loss_mask * (~gen.truncated)[:, None].to(loss_mask.dtype)
        device = gen.completion_ids.device
        rollout = Rollout(
            prompts=prompts,
            samples=samples,
            completion_ids=gen.completion_ids,
            completion_mask=gen.completion_mask,
            loss_mask=loss_mask,
            truncated=gen.truncated,
            texts=texts,
            rewards=scores.total.to(device),
            components=scores.components,
            failed=scores.failed,
            advantages=advantages.to(device),
            zero_std=zero_std,
            old_logps=None,
            ref_logps=None,
            seed=seed,
            step=step,
        )
        if s.updates_per_rollout > 1:
            rollout.old_logps = self._frozen_logps(rollout, reference=False)
        if s.beta > 0:
            rollout.ref_logps = self._frozen_logps(rollout, reference=True)
            if hasattr(self.reference, "reshard"):
                # FSDP2 keeps a root unit gathered after its forward for the backward (older torch always
                # does); the reference has no backward, so its root (embeddings, LM head) is sharded again here.
                self.reference.reshard()
        return rollout

    # ------------------------------------------------------------------------------------------
    def _minibatches(self, rollout: Rollout) -> list[torch.Tensor]:
        """The completion indices of each optimizer step: ``num_iterations`` passes, each a permutation (seeded by
        the rollout) cut into ``steps_per_rollout`` parts."""
        s = self.settings
        n = rollout.size
        generator = torch.Generator().manual_seed(rollout.seed)
        out = []
        for _ in range(s.num_iterations):
            order = (
                torch.randperm(n, generator=generator)
                if s.steps_per_rollout > 1
                else torch.arange(n)
            )
            out += [
                part.to(rollout.completion_ids.device)
                for part in torch.tensor_split(order, s.steps_per_rollout)
            ]
        return out

    def _step_tokens(self, rollout: Rollout, rows: torch.Tensor) -> torch.Tensor:
        """Active tokens of one optimizer step: this rank's, summed over ranks for ``dapo``."""
        import torch.distributed as dist

        tokens = rollout.loss_mask[rows].sum().double()
        if self.settings.loss_type == "dapo" and self._world > 1 and dist.is_initialized():
            dist.all_reduce(tokens)
        return tokens

    def update(self, rollout: Rollout, rows: torch.Tensor) -> tuple[float, LossStats, float]:
        """Accumulate the gradients of one optimizer step's completions ``rows`` (micro-batched).

        Returns:
            ``(loss, stats, entropy sum over the loss mask)``.
        """
        s = self.settings
        num_tokens = self._step_tokens(rollout, rows)
        total, stats, entropy = 0.0, LossStats(), 0.0
        for micro in self._micro_batches(rows):
            logps, ent = self._logps(self.model, rollout, micro)
            mask = rollout.loss_mask[micro]
            loss, part = policy_loss(
                logps,
                None if rollout.old_logps is None else rollout.old_logps[micro],
                rollout.advantages[micro],
                mask,
                loss_type=s.loss_type,
                epsilon_low=s.epsilon,
                epsilon_high=s.epsilon_high,
                ref_logps=None if rollout.ref_logps is None else rollout.ref_logps[micro],
                beta=s.beta,
                max_completion_length=s.max_new_tokens,
                num_sequences=rows.numel(),
                num_tokens=num_tokens,
                world_size=self._world,
            )
            self.manual_backward(loss)
            total += float(loss.detach())
            stats.add(part)
            entropy += float((ent * mask).sum())
        return total, stats, entropy

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """One rollout and its optimizer steps (see the module docstring)."""
        if self._skip(batch):
            return None
        optimizer = self.optimizers()
        schedule = self.lr_schedulers()
        started = time.perf_counter()
        rollout = self.make_rollout(batch)
        sampled = time.perf_counter()
        self.model.eval()  # dropout off during the updates too (see the module docstring)
        losses, stats, entropy = [], LossStats(), 0.0
        for index, rows in enumerate(self._minibatches(rollout)):
            optimizer.zero_grad(set_to_none=True)
            loss, part, ent = self.update(rollout, rows)
            if self.gradient_clip_val > 0:
                self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val)
            optimizer.step()
            if schedule is not None:
                schedule.step()
            losses.append(loss)
            if (
                index < self.settings.steps_per_rollout
            ):  # the first pass: the sampling policy's stats
                stats.add(part)
                entropy += ent
        self.engine.sync_weights(self.model)
        timings = {"rollout_s": sampled - started, "update_s": time.perf_counter() - sampled}
        self._log_rollout(rollout, losses, stats, entropy, timings)
        return None

    def _skip(self, batch: Mapping[str, Any]) -> bool:
        """Skip a batch whose samples were all skipped; with several ranks, every rank skips together (they
        must take the same number of optimizer steps)."""
        import torch.distributed as dist

        empty = torch.tensor([float(self._empty(batch))], device=self.device)
        if self._world > 1 and dist.is_initialized():
            dist.all_reduce(empty)
        return bool(empty.item() > 0)

    def _log_rollout(
        self,
        rollout: Rollout,
        losses: list[float],
        stats: LossStats,
        entropy: float,
        timings: Mapping[str, float],
    ) -> None:
        lengths = rollout.completion_mask.sum(1)
        tokens = max(stats.tokens, 1.0)
        metrics = {
            "train/loss": sum(losses) / max(len(losses), 1),
            "train/reward": float(rollout.rewards.mean()),
            "train/reward_std": float(rollout.rewards.std()) if rollout.size > 1 else 0.0,
            "train/kl": stats.kl / tokens,
            "train/clip_ratio": stats.clipped / tokens,
            "train/ratio": stats.ratio / tokens,
            "train/entropy": entropy / tokens,
            "train/completion_length": float(lengths.mean()),
            "train/completion_length_max": float(lengths.max()),
            "train/truncated_fraction": float(rollout.truncated.float().mean()),
            "train/frac_reward_zero_std": float(rollout.zero_std.float().mean()),
            "train/advantage_abs": float(rollout.advantages.abs().mean()),
            "train/rollout_s": timings["rollout_s"],
            "train/update_s": timings["update_s"],
        }
        for name, values in rollout.components.items():
            metrics[f"train/rewards/{name}/mean"] = float(values.mean())
            metrics[f"train/rewards/{name}/std"] = (
                float(values.std()) if values.numel() > 1 else 0.0
            )
        size = int(rollout.prompts.input_ids.shape[0])
        self.log_dict(metrics, batch_size=size, sync_dist=self._world > 1)
        self.log("train/reward_mean", metrics["train/reward"], prog_bar=True, batch_size=size)
        for name in self.reward_set.names:
            self.log(
                f"train/reward_failures/{name}",
                float(self.reward_set.failures[name]),
                batch_size=size,
            )
        every = self.settings.log_completions_every
        index = rollout.step // self.settings.updates_per_rollout
        if every and index % every == 0 and self.trainer.is_global_zero:
            rows = completion_rows(rollout, self.settings.log_completions)
            write_completion_table(self.trainer, rows, rollout.step)
