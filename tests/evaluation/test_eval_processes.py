"""``afnext eval`` as a process: killed mid-run and rerun, every sample is answered once; two gloo processes
(``trainer.devices=2``) give the predictions of one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from afnext.cli import main
from tests.inference.tiny import write_mmau

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def _command(root: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "benchmark=mmau",
        f"benchmark.root={root}",
        f"checkpoint={model}",
        f"out_dir={out}",
        "generation=greedy",
        "trainer.accelerator=cpu",
        *extra,
    ]


def _predictions(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "mmau" / "predictions.jsonl").read_text().splitlines()]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


@pytest.mark.slow
def test_killed_eval_resumes_every_sample_once(tmp_path, tiny_model_dir, capsys):
    root = write_mmau(tmp_path / "mmau", 24)
    extra = ("generation.max_new_tokens=40", "engine.max_batch_size=2")
    out = tmp_path / "killed"
    log = (tmp_path / "log.txt").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "afnext.cli", *_command(root, tiny_model_dir, out, *extra)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=ENV,
    )
    partial = out / "mmau" / "predictions.jsonl"
    deadline = time.monotonic() + 300
    while _lines(partial) < 4:
        assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _lines(partial)
    assert 4 <= done_before < 24  # killed mid-run

    assert main([*_command(root, tiny_model_dir, out, *extra), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["run"]["generated"] == 24 - done_before
    assert results["benchmarks"]["mmau"]["resumed"] == done_before
    ids = [p["id"] for p in _predictions(out)]
    assert len(ids) == len(set(ids)) == 24 and results["benchmarks"]["mmau"]["scored"] == 24

    # an uninterrupted run answers the same (greedy answers do not depend on the batches)
    straight = tmp_path / "straight"
    assert main([*_command(root, tiny_model_dir, straight, *extra), "--json"]) == 0
    capsys.readouterr()
    assert [p["prediction"] for p in _predictions(straight)] == [
        p["prediction"] for p in _predictions(out)
    ]


@pytest.mark.slow
def test_two_processes_give_the_predictions_of_one(tmp_path, tiny_model_dir, capsys):
    root = write_mmau(tmp_path / "mmau", 12, missing=(4,))
    extra = ("generation.max_new_tokens=8", "engine.max_batch_size=3")
    one = tmp_path / "one"
    assert main([*_command(root, tiny_model_dir, one, *extra), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    two = tmp_path / "two"
    run = subprocess.run(
        [sys.executable, "-m", "afnext.cli",
         *_command(root, tiny_model_dir, two, *extra, "trainer.devices=2"), "--json"],
        env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    double = json.loads(run.stdout)  # rank 1 prints nothing
    assert "rank 0 of 2" in run.stderr
    assert not list((two / "mmau").glob("predictions.rank*.jsonl"))  # merged into one file
    assert _predictions(two) == _predictions(one)
    assert double["benchmarks"]["mmau"]["official"] == single["benchmarks"]["mmau"]["official"]
    assert double["benchmarks"]["mmau"]["audio"]["missing"] == 1

    # fewer batches than processes: the process without one waits for the other
    run = subprocess.run(
        [sys.executable, "-m", "afnext.cli",
         *_command(root, tiny_model_dir, tmp_path / "few", *extra, "trainer.devices=2", "limit=2"), "--json"],
        env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["run"]["generated"] == 2
