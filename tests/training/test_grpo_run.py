"""Whole GRPO stages through ``afnext train experiment=tiny_grpo`` on small manifests: the run folder (checkpoints,
W&B offline run with the completions table, ``model/``), a reward that raises counted and logged without stopping
the run, and a SIGKILL mid-stage that resumes at the same step with the same rollout seed and ends with the
weights of an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from afnext.config import compose_config
from afnext.training.grpo import rollout_seed
from tests.data.test_dataset import write_tone
from tests.training.test_runs import _afnext_train, _weights


class Boom:
    """A reward that always raises (an unreachable judge)."""

    def __call__(self, sample, completion):
        raise RuntimeError("judge unreachable")


def _grpo_manifest(root: Path, name: str, n: int) -> Path:
    """Prompt-only lines (what ``afnext data build mode=grpo`` writes): the question, its answer and timeline."""
    write_tone(root / "tone.wav", 1.0)
    rows = [
        {
            "id": f"{name}-{k}",
            "sound": "tone.wav",
            "duration": 1.0,
            "conversations": [{"from": "human", "value": f"<sound>\nWhat is {k % 3}?"}],
            "answer": f"It is {k % 3}.",
            "choices": [],
            "timeline": [{"onset": 0.0, "offset": 1.0, "label": "tone", "kind": "sound"}],
        }
        for k in range(n)
    ]
    path = root / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _overrides(tmp_path: Path, run: Path, *extra: str) -> list[str]:
    train, val = _grpo_manifest(tmp_path, "train", 8), _grpo_manifest(tmp_path, "val", 4)
    grpo = "curriculum.stages.train.grpo"
    return [
        "experiment=tiny_grpo",
        "data=manifest",
        f"data.train=[{train}]",
        f"data.val=[{val}]",
        "data.batch_size=2",
        "data.num_workers=0",
        "logger=csv",
        "optim.warmup_steps=1",
        "optim.module.max_new_tokens=4",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        f"{grpo}.num_generations=2",
        f"{grpo}.max_new_tokens=4",
        f"{grpo}.log_completions_every=1",
        f"paths.run_dir={run}",
        f"run_name={run.name}",
        *extra,
    ]


def _metrics(stage: Path) -> list[dict[str, str]]:
    return [row for path in stage.rglob("metrics.csv") for row in csv.DictReader(path.open())]


@pytest.mark.slow
def test_grpo_stage_leaves_a_run_folder_and_counts_a_crashing_reward(tmp_path):
    from afnext.training.run import train

    run = tmp_path / "runs" / "grpo"
    grpo = "curriculum.stages.train.grpo"
    cfg = compose_config(
        "train",
        _overrides(
            tmp_path, run,
            "logger=wandb", "trainer.max_steps=4", "trainer.val_check_interval=2",
            f"+reward.boom._target_={Boom.__module__}.Boom",
            f"+{grpo}.rewards.boom=0.5",
            f"{grpo}.beta=0.05", f"{grpo}.num_iterations=2", f"{grpo}.micro_batch_size=2",
            f"{grpo}.mask_truncated_completions=true",
        ),
    )  # fmt: skip
    final = train(cfg)
    stage = run / "stages" / "0_train"
    assert json.loads((stage / "DONE").read_text())["steps"] == 4  # 2 rollouts x 2 updates
    assert final == stage / "model" and (stage / "model").is_dir()
    assert (stage / "checkpoints" / "last.ckpt").is_file()
    rows = [
        json.loads(line) for line in (stage / "rollouts" / "step_0.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 4 and rows[0]["failed"] == ["boom"] and rows[0]["rewards"]["boom"] == 0.0
    assert {"completion", "reward", "advantage", "audio", "seed"} <= set(rows[0])
    assert Path(rows[0]["audio"]).is_file()
    offline = next((stage / "wandb").glob("offline-run-*"))
    tables = list(offline.rglob("*completions*.table.json"))
    assert tables, sorted(str(p) for p in offline.rglob("*"))[:20]
    columns = json.loads(tables[0].read_text())["columns"]
    assert {"completion", "reward", "advantage", "audio", "accuracy", "boom"} <= set(columns)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigkill_mid_grpo_resumes_at_the_same_step_with_the_same_rollout_seed(tmp_path, capsys):
    from afnext.training.run import train

    steps = ["trainer.max_steps=6", "trainer.val_check_interval=3",
             "callbacks.model_checkpoint.every_n_train_steps=1",
             f"+reward.boom._target_={Boom.__module__}.Boom",
             "+curriculum.stages.train.grpo.rewards.boom=0.5"]  # fmt: skip
    straight = tmp_path / "runs" / "straight"
    train(compose_config("train", _overrides(tmp_path, straight, *steps)))

    killed = tmp_path / "runs" / "killed"
    overrides = _overrides(tmp_path, killed, *steps)
    stage = killed / "stages" / "0_train"
    proc = _afnext_train(overrides, tmp_path / "k.log")
    last = stage / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 1500
    while proc.poll() is None and time.monotonic() < deadline:
        if last.exists() and torch.load(last, weights_only=False)["global_step"] >= 2:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "k.log").read_text()[-4000:]
    assert not (stage / "DONE").exists()
    stopped_at = torch.load(last, weights_only=False)["global_step"]
    assert 2 <= stopped_at < 6
    for late in (stage / "rollouts").glob("step_*.jsonl"):  # rollouts the kill cut short are redone
        if int(late.stem.split("_")[1]) >= stopped_at:
            late.unlink()

    capsys.readouterr()
    train(compose_config("train", overrides))
    assert "resuming stage train" in capsys.readouterr().err
    assert json.loads((stage / "DONE").read_text())["steps"] == 6
    resumed = [
        json.loads(x)
        for x in (stage / "rollouts" / f"step_{stopped_at}.jsonl").read_text().splitlines()
    ]
    assert {r["step"] for r in resumed} == {stopped_at}
    assert {r["seed"] for r in resumed} == {rollout_seed(0, stopped_at)}
    for step in range(6):
        name = f"step_{step}.jsonl"
        assert (stage / "rollouts" / name).read_text() == (
            straight / "stages" / "0_train" / "rollouts" / name
        ).read_text(), name
    metrics = _metrics(stage)
    logged = {k for row in metrics for k, v in row.items() if v}
    for key in ("train/kl", "train/clip_ratio", "train/entropy", "train/completion_length",
                "train/frac_reward_zero_std", "train/rewards/accuracy/mean", "train/rewards/accuracy/std",
                "train/reward", "train/loss", "val/reward", "val/accuracy", "lr/llm"):  # fmt: skip
        assert key in logged, key
    failures = [
        float(r["train/reward_failures/boom"])
        for r in metrics
        if r.get("train/reward_failures/boom")
    ]
    assert (
        max(failures) >= 6 * 2 * 2
    )  # every completion of every rollout: counted, and the run went on
    expected, got = _weights(straight), _weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(
            got[name], expected[name], rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    "strategy",
    [["trainer.strategy=ddp"], ["trainer=fsdp", "trainer.precision=32"]],
    ids=["ddp", "fsdp2"],
)
def test_grpo_on_two_cpu_processes(tmp_path, strategy):
    """Two ranks (gloo): each samples its own prompts' groups; the updates stay in step (DDP all-reduces the
    gradients, FSDP2 reduce-scatters them and gathers the root's weights for generation)."""
    from afnext.model import AudioLanguageModel

    run = tmp_path / "runs" / "two"
    overrides = _overrides(
        tmp_path, run, *strategy, "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=2",
        "trainer.val_check_interval=2", "curriculum.stages.train.grpo.beta=0.05",
    )  # fmt: skip
    proc = _afnext_train(overrides, tmp_path / "two.log")
    try:
        proc.wait(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (tmp_path / "two.log").read_text()
    assert proc.returncode == 0, text[-5000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in text, text[-4000:]
    sharded = "trainer=fsdp" in strategy
    where = (
        "a frozen copy sharded over 2 ranks (FSDP2)" if sharded else "a frozen copy on every rank"
    )
    assert f"GRPO reference policy (beta=0.05): {where}" in text, text[-4000:]
    stage = run / "stages" / "0_train"
    assert json.loads((stage / "DONE").read_text())["steps"] == 2
    assert (stage / "rollouts" / "step_0.jsonl").is_file()
    model = AudioLanguageModel.from_pretrained(stage / "model")
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
