"""``trainer=fsdp`` (FSDP2 through Lightning's ModelParallelStrategy) on 2 CPU processes (gloo): the same losses as
one process for the same global batch, sharded checkpoints that survive a SIGKILL and resume to the weights of an
uninterrupted run, and a stage ``model/`` folder written once from the gathered full state dict."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from afnext.config import compose_config
from tests.training.test_runs import ENV, _overrides, _weights

FSDP = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32"]
CHECKPOINTING = ["optim.module.activation_checkpointing=true"]


def _launch(overrides: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        # Its own process group: the rank Lightning starts is killed with it.
        return subprocess.Popen(
            [sys.executable, "-m", "afnext.cli", "train", *overrides],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
            start_new_session=True,
        )


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 900) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert proc.returncode == 0, text[-5000:]
    return text


def _losses(run: Path) -> list[float]:
    rows = list(csv.DictReader(next((run / "stages").rglob("metrics.csv")).open()))
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_fsdp2_on_two_processes_gives_the_losses_of_one_process(tmp_path):
    """Same global batch: 2 ranks x batches of 2 against 1 process accumulating 2 batches of 2 (the sharded run
    recomputes its activations per layer)."""
    from afnext.model import AudioLanguageModel
    from afnext.training.run import train

    # Each rank takes every other batch of the shuffled order: a step's batches are the single run's two.
    steps = [
        "trainer.max_steps=5",
        "trainer.val_check_interval=5",
        "data.batch_size=2",
        "data.balance_work=false",
    ]
    sharded = tmp_path / "runs" / "sharded"
    log = tmp_path / "sharded.log"
    text = _finish(_launch(_overrides(tmp_path, sharded, *steps, *FSDP, *CHECKPOINTING), log), log)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in text, text[-4000:]

    single = tmp_path / "runs" / "single"
    train(
        compose_config(
            "train", _overrides(tmp_path, single, *steps, "trainer.accumulate_grad_batches=2")
        )
    )

    got, expected = _losses(sharded), _losses(single)
    assert len(got) == len(expected) == 5
    for a, b in zip(got, expected):
        assert a == pytest.approx(b, rel=1e-4)
    final_sharded, final_single = _weights(sharded), _weights(single)
    assert final_sharded.keys() == final_single.keys()
    for name in final_single:
        torch.testing.assert_close(final_sharded[name], final_single[name], rtol=1e-3, atol=1e-5)
    model_dir = Path(json.loads((sharded / "final.json").read_text())["model"])
    model = AudioLanguageModel.from_pretrained(model_dir)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    checkpoints = sharded / "stages" / "0_train" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_symlink() and (
        checkpoints / "last.ckpt" / "meta.pt"
    ).is_file()


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_sigkill_during_fsdp2_resumes_to_the_uninterrupted_weights(tmp_path):
    steps = [
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        *FSDP,
    ]
    straight = tmp_path / "runs" / "straight"
    _finish(_launch(_overrides(tmp_path, straight, *steps), tmp_path / "a.log"), tmp_path / "a.log")

    killed = tmp_path / "runs" / "killed"
    overrides = _overrides(tmp_path, killed, *steps)
    stage = killed / "stages" / "0_train"
    last = stage / "checkpoints" / "last.ckpt"
    proc = _launch(overrides, tmp_path / "b.log")
    deadline = time.monotonic() + 900

    def step_of_last() -> int:
        try:
            return int(torch.load(last / "meta.pt", weights_only=False)["global_step"])
        except (OSError, KeyError, RuntimeError, EOFError):
            return -1

    while proc.poll() is None and time.monotonic() < deadline and step_of_last() < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "b.log").read_text()[-4000:]
    assert not (stage / "DONE").exists()
    stopped_at = step_of_last()
    assert 2 <= stopped_at < 6  # the link always names a complete checkpoint

    log = tmp_path / "c.log"
    text = _finish(_launch(overrides, log), log)
    assert "resuming stage train" in text
    assert json.loads((stage / "DONE").read_text())["steps"] == 6
    expected, got = _weights(straight), _weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sequence_parallel_on_two_processes_gives_the_losses_of_one_process(tmp_path):
    """The contract: ``trainer.devices=2 trainer.sequence_parallel=2`` (each row split over the 2 ranks, the
    same batches on both) gives the per-step losses of ``trainer.devices=1``."""
    from afnext.training.run import train

    steps = ["trainer.max_steps=5", "trainer.val_check_interval=5"]
    split = tmp_path / "runs" / "split"
    log = tmp_path / "split.log"
    sp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.sequence_parallel=2"]
    _finish(_launch(_overrides(tmp_path, split, *steps, *sp), log), log)
    single = tmp_path / "runs" / "single"
    train(compose_config("train", _overrides(tmp_path, single, *steps)))
    got, expected = _losses(split), _losses(single)
    assert len(got) == len(expected) == 5
    for a, b in zip(got, expected):
        assert a == pytest.approx(b, rel=1e-4)
