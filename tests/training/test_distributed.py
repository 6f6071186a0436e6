"""Training on 2 gloo processes equals one process: the loss is the mean over the target tokens of the whole
optimizer step (uneven micro-batches under gradient accumulation, across ranks), fused or naive; a rank whose
batch was all skipped or has no audio takes part in every collective (no hang, no DDP unused-parameter error).

Each case runs ``tests/training/dist_worker.py`` under ``torchrun`` (2 CPU processes) for one optimizer step and
compares the gradients the optimizer sees, and the logged loss, with a plain single-process computation.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from afnext.data.collate import Collator
from afnext.llms.loss import IGNORE_INDEX, shift_labels
from tests.test_packing import LLMS, _inputs, build, samples

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_worker(tmp_path: Path, **cfg) -> dict:
    import json

    out = tmp_path / "probe.pt"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**cfg, "out": str(out)}))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(cfg.get("nproc", 2)),
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "tests.training.dist_worker", str(config),
    ]  # fmt: skip
    # A hang (a rank left out of a collective) ends here, not in CI's own timeout.
    run = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    return torch.load(out, weights_only=False)


def reference(micro_batches: list, loss_impl: str = "naive") -> tuple[float, dict]:
    """One process, no Lightning: summed token losses of every sample over all their target tokens."""
    model = build(LLMS["qwen2"], "sdpa", loss_impl=loss_impl)
    items = samples(model)
    collate = Collator(model.llm.tokenizer.pad_token_id)
    chosen = [i for rank in micro_batches for mb in rank if mb != "skip" for i in mb]
    total, count = torch.zeros(()), 0
    for i in chosen:
        batch = collate([items[i]])
        targets = int((shift_labels(batch["labels"]) != IGNORE_INDEX).sum())
        total = total + model(**_inputs(batch)).loss * targets
        count += targets
    loss = total / count
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss), grads


def assert_same(probe: dict, expected: tuple[float, dict], rtol: float = 1e-4) -> None:
    loss, grads = expected
    assert probe["loss"] == pytest.approx(loss, rel=1e-5)
    assert probe["grads"].keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(probe["grads"][name], grad, rtol=rtol, atol=1e-6, msg=name)


# Sample 1 is text-only; the others have audio and differ in length, so micro-batches are uneven in tokens.
UNEVEN = [[[0, 2], [4]], [[3], [1]]]  # rank 1 ends with a text-only micro-batch
SKIPPED = [[[0], [2, 3]], [[4], "skip"]]  # rank 1 ends with an all-skipped micro-batch
BOTH = [[[0], [2, 3]], ["skip", [1]]]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("strategy", "loss_impl", "micro_batches"),
    [
        ("ddp", "fused", UNEVEN),
        ("ddp", "naive", SKIPPED),
        ("fsdp", "fused", BOTH),
    ],
    ids=["ddp-fused-text-only", "ddp-naive-skipped", "fsdp2-fused-skipped-and-text-only"],
)
def test_two_ranks_with_accumulation_equal_one_process(
    tmp_path, strategy, loss_impl, micro_batches
):
    probe = run_worker(
        tmp_path, strategy=strategy, loss_impl=loss_impl, micro_batches=micro_batches
    )
    assert_same(probe, reference(micro_batches))


def test_the_reference_differs_from_a_mean_of_micro_batch_means():
    """The check above can fail: averaging per-micro-batch means (what Lightning + DDP do with per-batch mean
    losses) gives other gradients for these batches, far beyond the tolerance used."""
    model = build(LLMS["qwen2"], "sdpa", loss_impl="naive")
    items = samples(model)
    collate = Collator(model.llm.tokenizer.pad_token_id)
    means = [
        model(**_inputs(collate([items[i] for i in mb]))).loss for mb in (*UNEVEN[0], *UNEVEN[1])
    ]
    (sum(means) / len(means)).backward()
    _, expected = reference(UNEVEN)
    diffs = [
        float((p.grad - expected[n]).abs().max() / expected[n].abs().max().clamp(min=1e-12))
        for n, p in model.named_parameters()
        if p.grad is not None and n.startswith("llm.")
    ]
    assert max(diffs) > 1e-2


PACKED = [
    [0, 1, 2],
    [3, 4],
]  # two micro-batches, rows packed with several samples each (audio, text-only)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("sequence_parallel", "ring_size"),
    [(2, 1), (2, 2), (4, 2)],
    ids=["ulysses-2", "ring-2", "hybrid-2x2"],
)
def test_sequence_parallel_equals_one_process(tmp_path, sequence_parallel, ring_size):
    """One packed row (several samples, audio, GQA: 4 query / 2 key-value heads, float32) split over the group:
    Ulysses, Ring and both give the loss and the gradients of one process."""
    micro = [PACKED] * sequence_parallel  # the ranks of the group share the batch
    probe = run_worker(
        tmp_path, strategy="fsdp", loss_impl="fused", micro_batches=micro, pack=True,
        sequence_parallel=sequence_parallel, ring_size=ring_size, nproc=sequence_parallel,
    )  # fmt: skip
    assert_same(probe, reference([PACKED]), rtol=1e-5)
