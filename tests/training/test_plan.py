"""``afnext plan``: the contract JSON, every full-size stage fitting on 8 x 80 GB nodes, the degree a stage needs,
and the plan against measured peaks on the CPU (within 25%)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from afnext.cli import main
from afnext.errors import ConfigError
from afnext.training.plan import parse_bytes

ROOT = Path(__file__).resolve().parents[2]
FULL = ["experiment=afnext_instruct", "trainer.devices=8", "trainer.num_nodes=16"]


def test_the_contract_json_says_every_afnext_stage_fits_on_80_gb(capsys):
    assert main(["plan", *FULL, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    stages = plan["stages"]
    assert [s["name"] for s in stages][:4] == ["pretrain1", "pretrain2", "midtrain1", "midtrain2"]
    for stage in stages:
        assert {"name", "total_bytes", "fits"} <= stage.keys()
        assert stage["fits"] is True and 0 < stage["total_bytes"] <= 80 * 2**30, stage["name"]
        assert ("rollout" in stage["terms"]) == stage["name"].endswith("_grpo")  # GRPO samples
    mid2 = next(s for s in stages if s["name"] == "midtrain2")
    assert mid2["sequence_parallel"] == 2 and mid2["tokens_per_gpu"] == 131072 // 2


def test_a_stage_that_does_not_fit_gets_the_degree_that_makes_it_fit(capsys):
    assert main(["plan", *FULL, "curriculum.stages.midtrain2.sequence_parallel=1", "--json"]) == 0
    mid2 = next(
        s for s in json.loads(capsys.readouterr().out)["stages"] if s["name"] == "midtrain2"
    )
    assert mid2["fits"] is False and mid2["suggested_sequence_parallel"] == 2
    assert mid2["activations_without_checkpointing"] > mid2["terms"]["llm_activations"]


def test_a_grpo_stage_counts_its_rollout_and_more_completions_need_more(capsys):
    """Sampling (KV cache of every completion, prefill) and the update never coexist: the total is the
    state plus the larger of the two; 16 completions of 30 minutes do not fit, and the plan says so."""

    def cot_grpo(*extra: str) -> dict:
        assert main(["plan", *FULL, *extra, "--json"]) == 0
        stages = json.loads(capsys.readouterr().out)["stages"]
        return next(s for s in stages if s["name"] == "cot_grpo")

    eight = cot_grpo()
    terms = eight["terms"]
    state = sum(
        terms.get(k, 0) for k in ("parameters", "gradients", "optimizer", "gathered_parameters")
    )
    step = sum(v for k, v in terms.items() if k not in ("parameters", "gradients", "optimizer",
                                                          "gathered_parameters", "rollout"))  # fmt: skip
    assert terms["rollout"] > step and eight["total_bytes"] == pytest.approx(
        state + terms["rollout"] + 1.5 * 2**30, abs=1
    )
    sixteen = cot_grpo("curriculum.stages.cot_grpo.grpo.num_generations=16")
    assert sixteen["terms"]["rollout"] > 1.9 * terms["rollout"] and sixteen["fits"] is False
    # A KL penalty keeps a frozen reference: a copy of the weights, sharded like them by FSDP2 (128 ranks)
    kl = cot_grpo("curriculum.stages.cot_grpo.grpo.beta=0.04")
    assert "reference" not in terms and kl["terms"]["reference"] == terms["parameters"]
    assert kl["total_bytes"] == eight["total_bytes"] + terms["parameters"]
    ddp = cot_grpo("curriculum.stages.cot_grpo.grpo.beta=0.04", "trainer=ddp")
    assert ddp["terms"]["reference"] == ddp["terms"]["parameters"] > 100 * terms["parameters"]


def test_the_table_and_the_errors(capsys):
    assert main(["plan", *FULL]) == 0
    assert "midtrain2" in capsys.readouterr().out
    assert parse_bytes("80GiB") == 80 * 2**30 and parse_bytes("141 GB") == 141 * 10**9
    with pytest.raises(ConfigError, match="80GiB"):
        parse_bytes("lots")
    assert (
        main(["plan", "experiment=afnext_instruct"]) == 1
    )  # trainer.devices=auto: says to give a number


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_plan_is_within_25_percent_of_measured_peaks_on_the_cpu():
    """Three tiny configurations (plain, activation checkpointing, packed with the reference attention), each
    measured in a fresh process (benchmarks/bench_plan.py)."""
    bench = ROOT / "benchmarks" / "bench_plan.py"
    for name in ("plain", "checkpointing", "packed"):
        run = subprocess.run(
            [sys.executable, str(bench), "--config", name], capture_output=True, text=True, cwd=ROOT
        )
        assert run.returncode == 0, run.stderr[-3000:]
        result = json.loads(run.stdout.strip().splitlines()[-1])
        ratio = result["planned"] / result["measured"]
        assert 0.75 <= ratio <= 1.25, (name, result)
