"""One optimizer step of ``AudioLanguageModule`` on given micro-batches per rank, run under ``torchrun`` by
``tests/training/test_distributed.py``; rank 0 saves the gradients the optimizer would see and the step's loss.

    python -m torch.distributed.run --nproc_per_node 2 -m tests.training.dist_worker CONFIG.json

CONFIG: ``{"strategy": "ddp" | "fsdp", "loss_impl": ..., "micro_batches": [[[0, 1], [2]], [[3], "skip"]],
"out": PATH}``: per rank, its micro-batches in order, each a list of sample indices (``tests.test_packing.samples``)
or ``"skip"`` (a batch whose samples were all skipped); every rank has the same number (the accumulation steps).
Optional: ``"sequence_parallel"``, ``"ring_size"`` (FSDP2; the ranks of a group get the same micro-batches),
``"pack"`` (several samples per row), ``"nproc"`` (processes).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from afnext.data.collate import Collator
from afnext.data.dataset import Skipped
from afnext.training.module import AudioLanguageModule
from afnext.training.strategy import FSDP2Strategy
from tests.test_packing import LLMS, build, samples


class GradProbe(AudioLanguageModule):
    """Records the gradients after the module's loss normalisation, as the optimizer gets them."""

    def on_before_optimizer_step(self, optimizer):  # type: ignore[no-untyped-def]
        super().on_before_optimizer_step(optimizer)
        grads = {}
        for name, param in self.model.named_parameters():
            if param.grad is None:
                continue
            grad = param.grad
            grad = grad.full_tensor() if hasattr(grad, "full_tensor") else grad  # FSDP2: collective
            grads[name] = grad.detach().cpu().clone()
        self.probe = {"grads": grads, "loss": self.step_loss}


class Batches:
    """An iterable of ready batches (a plain list would be read as several dataloaders)."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def main(path: str) -> None:
    cfg = json.loads(Path(path).read_text())
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    model = build(LLMS["qwen2"], "sdpa", loss_impl=cfg["loss_impl"])
    items = samples(model)
    pack = cfg.get("pack", False)
    collate = Collator(
        model.llm.tokenizer.pad_token_id, pack=pack, max_length=400 if pack else None
    )
    batches = [
        collate(
            [Skipped("x:1", "missing_file", "gone")] if mb == "skip" else [items[i] for i in mb]
        )
        for mb in cfg["micro_batches"][rank]
    ]
    module = GradProbe(
        model, trainable=("encoder", "connector", "llm"), lr=1e-3, generate_batches=0
    )
    strategy = (
        FSDP2Strategy(
            sequence_parallel=cfg.get("sequence_parallel", 1), ring_size=cfg.get("ring_size", 1)
        )
        if cfg["strategy"] == "fsdp"
        else "ddp"
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=world,
        strategy=strategy,
        precision=32,
        max_steps=1,
        accumulate_grad_batches=len(batches),
        gradient_clip_val=None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=Batches(batches))
    if rank == 0:
        torch.save(module.probe, cfg["out"])


if __name__ == "__main__":
    main(sys.argv[1])
