"""Float32 master weights: an LLM configured in bfloat16 still trains in float32, so updates smaller than
bfloat16's resolution are kept; ``bf16-true`` is allowed with a warning."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import torch

from afnext.config import compose_config
from afnext.training.precision import use_master_weights
from tests.training.test_runs import _overrides, _weights


def test_trainable_parameters_become_float32_and_frozen_ones_stay():
    from afnext.llms.hf import HFCausalLM
    from tests.helpers import TINY_LLM

    llm = HFCausalLM(config=TINY_LLM, dtype="bfloat16")
    for name, param in llm.named_parameters():
        param.requires_grad_("layers.0" in name)
    assert use_master_weights(llm, "bf16-mixed") > 0
    for name, param in llm.named_parameters():
        assert param.dtype == (torch.float32 if "layers.0" in name else torch.bfloat16), name


def test_bf16_true_is_allowed_with_a_warning(caplog):
    from afnext.llms.hf import HFCausalLM
    from tests.helpers import TINY_LLM

    llm = HFCausalLM(config=TINY_LLM, dtype="bfloat16")
    with caplog.at_level(logging.WARNING):
        assert use_master_weights(llm, "bf16-true") == 0
    assert "round away" in caplog.text
    assert all(p.dtype == torch.bfloat16 for p in llm.parameters())


def test_an_update_below_bf16_resolution_still_changes_the_master_weights(tmp_path):
    """One AdamW step at lr 1e-6 with llm.dtype=bfloat16: every LLM weight moves by about 1e-6, far below half
    of bfloat16's spacing at its magnitude, so a bfloat16 weight would not move at all."""
    from hydra.utils import instantiate

    from afnext.training.run import train

    run = tmp_path / "runs" / "bf16"
    overrides = _overrides(
        tmp_path,
        run,
        "llm.dtype=bfloat16",
        "trainer.precision=bf16-mixed",
        "optim.lr={default: 1.0e-6}",
        "optim.warmup_steps=0",
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
    )
    cfg = compose_config("train", overrides)
    pl.seed_everything(int(cfg.seed), workers=True)
    start = {
        k: v.detach().clone()
        for k, v in instantiate(cfg.model, _convert_="all").state_dict().items()
    }
    train(cfg)
    end = _weights(run)
    moved = kept = 0
    for name, value in end.items():
        if not name.startswith("llm.") or value.ndim < 2:
            continue
        assert value.dtype == torch.float32, name
        before = start[name].float()
        delta = (value - before).abs()
        # bfloat16's spacing at each weight (8 bits of mantissa: 2**(exponent - 7))
        spacing = torch.exp2(torch.floor(torch.log2(before.abs().clamp(min=1e-30))) - 7)
        small = (delta > 0) & (delta < spacing / 4)  # below half the spacing on either side
        moved += int(small.sum())
        # Rounded to bfloat16, these updates vanish.
        kept += int((value.bfloat16() == before.bfloat16())[small].sum())
    assert moved > 1000 and kept == moved
