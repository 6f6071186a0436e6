"""Whole training runs of ``experiment=tiny`` on small manifests: a SIGKILLed run resumes to the same
weights as an uninterrupted one, DDP on two CPU processes, bad samples in the training set, the tiny
model presets overriding the experiment's (all combinations built on meta, every pair across the groups with
real weights and a forward), and the demo end to end at toy size."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from afnext.config import compose_config
from tests.data.test_dataset import write_corpus
from tests.training.test_training import _manifest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def _overrides(tmp_path: Path, run: Path, *extra: str) -> list[str]:
    train, val = _manifest(tmp_path, "train", 8), _manifest(tmp_path, "val", 4)
    return [
        "experiment=tiny",
        "data=manifest",
        f"data.train=[{train}]",
        f"data.val=[{val}]",
        "data.batch_size=4",
        "data.num_workers=0",
        "logger=csv",
        "optim.warmup_steps=2",
        "optim.module.generate_batches=0",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        f"paths.run_dir={run}",
        f"run_name={run.name}",
        *extra,
    ]


def _afnext_train(overrides: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "afnext.cli", "train", *overrides],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )


def _weights(run: Path) -> dict[str, torch.Tensor]:
    model = Path(json.loads((run / "final.json").read_text())["model"])
    return {
        name: tensor
        for file in sorted(model.glob("*.safetensors"))
        for name, tensor in load_file(file).items()
    }


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a whole `afnext train` process (SIGKILLed), and two runs in this one
def test_sigkill_mid_run_then_resume_ends_with_the_uninterrupted_weights(tmp_path, capsys):
    """Only the run that is killed is a child process; the uninterrupted and resumed runs call ``train``."""
    from afnext.training.run import train

    steps = ["trainer.max_steps=6", "trainer.val_check_interval=2"]
    straight = tmp_path / "runs" / "straight"
    train(compose_config("train", _overrides(tmp_path, straight, *steps)))

    killed = tmp_path / "runs" / "killed"
    overrides = _overrides(tmp_path, killed, *steps)
    stage = killed / "stages" / "0_train"
    proc = _afnext_train(overrides, tmp_path / "b.log")
    last = stage / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 1500
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "b.log").read_text()[-4000:]
    assert last.is_file() and not (stage / "DONE").exists()
    stopped_at = torch.load(last, weights_only=False)["global_step"]
    assert 2 <= stopped_at < 6

    capsys.readouterr()
    train(compose_config("train", overrides))
    assert "resuming stage train" in capsys.readouterr().err
    assert json.loads((stage / "DONE").read_text())["steps"] == 6
    expected, got = _weights(straight), _weights(killed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(
            got[name], expected[name], rtol=0, atol=0, msg=lambda m, name=name: f"{name}: {m}"
        )


def _wait(proc: subprocess.Popen, log: Path, timeout: float = 1500) -> None:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()[-4000:]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two processes: the CLI (rank 0) and the rank Lightning starts
def test_ddp_on_two_cpu_processes(tmp_path):
    run = tmp_path / "runs" / "ddp"
    overrides = _overrides(
        tmp_path,
        run,
        "trainer.strategy=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
    )
    log = tmp_path / "ddp.log"
    _wait(_afnext_train(overrides, log), log)
    text = log.read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in text, text[-4000:]
    assert json.loads((run / "stages" / "0_train" / "DONE").read_text())["steps"] == 3
    assert _weights(run)


@pytest.mark.slow
def test_bad_samples_are_skipped_counted_logged_and_printed(tmp_path, capsys, caplog):
    import csv

    from afnext.training.run import train

    train_manifest = write_corpus(tmp_path / "corpus")
    run = tmp_path / "runs" / "bad"
    overrides = _overrides(
        tmp_path,
        run,
        f"data.train=[{train_manifest}]",
        "data.batch_size=2",
        "data.max_errors_printed=3",
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
    )
    final = train(compose_config("train", overrides))
    assert final.is_dir()
    stage = run / "stages" / "0_train"
    assert json.loads((stage / "DONE").read_text())["steps"] == 4

    printed = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped sample")
    ]
    assert len(printed) == 3 and all(f"{train_manifest}:" in m for m in printed)
    summary = capsys.readouterr().err
    assert "skipped train samples:" in summary
    for reason in ("missing_file", "unreadable_audio", "malformed_json", "placeholder_mismatch"):
        assert reason in summary

    rows = list(csv.DictReader((next(stage.rglob("metrics.csv"))).open()))
    logged = {
        key: max(float(r[key]) for r in rows if r.get(key))
        for key in rows[0]
        if key.startswith("train/skipped")
    }
    for reason in ("missing_file", "unreadable_audio", "malformed_json", "placeholder_mismatch"):
        assert logged[f"train/skipped/{reason}"] >= 1
    assert logged["train/skipped_samples"] >= 4


GROUPS = ("encoder", "time_embedding", "connector", "llm")


def _tiny_options() -> dict[str, list[str]]:
    """Each model group's tiny presets (every time embedding and connector; encoders and LLMs named ``*_tiny*``)."""
    from afnext.config import config_groups

    groups = config_groups()
    return {
        g: sorted(o for o in groups[g] if g not in ("encoder", "llm") or "_tiny" in o)
        for g in GROUPS
    }


def _pairwise(options: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """A covering design: every pair of presets from two different groups is in at least one combination.

    Every (encoder, connector) pair once; the time embedding and the LLM are picked by the index sum, which
    walks every value of each against every encoder, every connector and each other (checked by
    ``test_the_preset_combinations_cover_every_pair``). The cross product would be 96 combinations.
    """
    encoders, times, connectors, llms = (options[g] for g in GROUPS)
    return [
        (enc, times[(e + c) % len(times)], con, llms[(e + c) % len(llms)])
        for (e, enc), (c, con) in itertools.product(enumerate(encoders), enumerate(connectors))
    ]


def _missing_pairs(options: dict[str, list[str]], combos: list[tuple[str, ...]]) -> set:
    group_pairs = list(itertools.combinations(range(len(GROUPS)), 2))
    wanted = {
        (i, a, j, b) for i, j in group_pairs for a in options[GROUPS[i]] for b in options[GROUPS[j]]
    }
    return wanted - {(i, c[i], j, c[j]) for c in combos for i, j in group_pairs}


def test_the_preset_combinations_cover_every_pair():
    options = _tiny_options()
    assert all(len(v) >= 2 for v in options.values()), options
    assert not _missing_pairs(options, _pairwise(options))
    # the check itself can fail: a design that pins the time embedding misses pairs
    pinned = [(e, options["time_embedding"][0], c, m) for e, _, c, m in _pairwise(options)]
    assert _missing_pairs(options, pinned)


def _assert_parts_as_named(model, cfg, combo: tuple[str, ...]) -> None:
    """Each part is the class its preset's ``_target_`` names; ``time_embedding=none`` builds none."""
    for part in ("encoder", "connector", "llm"):
        want = cfg[part]._target_.rsplit(".", 1)[1]
        assert type(getattr(model, part)).__name__ == want, (combo, part)
    assert (model.time_embedding is None) == (combo[GROUPS.index("time_embedding")] == "none"), (
        combo
    )


@pytest.mark.parametrize("encoder", _tiny_options()["encoder"])  # four parts, for the xdist workers
def test_every_tiny_preset_combination_overrides_and_builds_on_meta(encoder):
    """The whole cross product of the tiny presets as command-line overrides on ``experiment=tiny``: each
    composes and builds on the ``meta`` device (no weights) into the classes its presets name. The covering
    design below runs a real forward for every pair."""
    from afnext.config import build_on_meta

    options = {**_tiny_options(), "encoder": [encoder]}
    combos = list(itertools.product(*(options[g] for g in GROUPS)))
    assert len(combos) >= 8, options
    for combo in combos:
        cfg = compose_config(
            "train", ["experiment=tiny", *(f"{g}={o}" for g, o in zip(GROUPS, combo))]
        )
        model = build_on_meta(cfg)
        _assert_parts_as_named(model, cfg, combo)


@pytest.mark.parametrize(
    ("encoder", "time_embedding", "connector", "llm"), _pairwise(_tiny_options())
)
def test_tiny_preset_combinations_compute_a_loss(encoder, time_embedding, connector, llm):
    """``experiment=tiny`` with four tiny presets on top builds, with real weights, each part the class its
    preset names, and computes a finite loss; every pair of presets across the groups is in some case."""
    from afnext.data.processor import AudioProcessor
    from afnext.training.run import build_model
    from tests.helpers import tone_mix

    cfg = compose_config(
        "train",
        [
            "experiment=tiny",
            f"encoder={encoder}",
            f"time_embedding={time_embedding}",
            f"connector={connector}",
            f"llm={llm}",
        ],
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _assert_parts_as_named(model, cfg, (encoder, time_embedding, connector, llm))
    processor = AudioProcessor.from_model(model, padding_side="right")
    messages = [
        {"role": "user", "content": "<sound>\nWhich sound comes first?"},
        {"role": "assistant", "content": "(A) high tone"},
    ]
    batch = processor([messages], audio=[[tone_mix(1.5)]], return_labels=True)
    with torch.no_grad():
        out = model(**batch)
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert model.loss_impl == "fused" and out.logits is None and torch.isfinite(out.loss)
    assert logits.shape[:2] == batch["input_ids"].shape


@pytest.mark.slow
def test_demo_end_to_end_on_a_few_scenes(tmp_path, capsys, monkeypatch):
    """`afnext demo` at toy size: builds scenes, trains, scores the test split, chats, prints the last line;
    leaves a W&B offline run with the validation table (playable audio), a checkpoint and the test
    predictions. (The full-size run is measured, not tested: benchmarks/RESULTS.md.)"""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    from afnext.cli import main

    tables = []
    log_table = WandbLogger.log_table

    def spy(self, key, columns=None, data=None, *args, **kwargs):
        tables.append((key, columns, data))
        return log_table(self, key, columns, data, *args, **kwargs)

    monkeypatch.setattr(WandbLogger, "log_table", spy)

    build = [
        "generator=template", "source=synthetic", "source.num_scenes=12", "source.min_duration=4.0",
        "source.max_duration=5.0", "source.min_events=2", "source.max_events=2", "source.speech=off",
        "generator.question_types=[after]", "generator.choices=0", "mode=instruct", "seed=0",
    ]  # fmt: skip
    overrides = [
        f"paths.root_dir={tmp_path}",
        "run_name=demo",
        "demo.build=[" + ",".join(f'"{b}"' for b in build) + "]",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "data.batch_size=4",
        "data.num_workers=0",
    ]
    assert main(["demo", *overrides]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    accuracy, chance = (float(part.split("=")[1]) for part in last.split())
    assert last.startswith("accuracy=") and 0 <= accuracy <= 1 and 0 < chance <= 1
    run = tmp_path / "runs" / "demo"
    test_rows = (tmp_path / "data" / "tiny_scenes" / "test.jsonl").read_text().splitlines()
    predictions = (run / "test_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == len(test_rows) > 0
    assert sum(json.loads(p)["correct"] for p in predictions) / len(predictions) == pytest.approx(
        accuracy, abs=5e-4
    )
    stage = run / "stages" / "0_train"
    assert (stage / "checkpoints" / "last.ckpt").is_file() and (stage / "DONE").is_file()
    assert list((stage / "wandb").glob("offline-run-*/run-*.wandb"))
    key, columns, data = tables[-1]
    assert key == "val/predictions" and columns[:4] == ["id", "audio", "question", "prediction"]
    for row in data:
        assert (
            isinstance(row[1], wandb.Audio) and row[2].startswith("<sound>\n") and "after" in row[2]
        )
    assert {Path(row[1]._path).name for row in data} <= {
        p.name for p in (tmp_path / "data" / "tiny_scenes" / "audio").iterdir()
    }


@pytest.mark.slow
def test_experiment_tiny_builds_its_data_on_first_use(tmp_path):
    """`afnext train experiment=tiny` on a fresh checkout (no data yet): the Hydra app builds the experiment's
    synthetic scenes (a second composition inside the running one) and trains on them."""
    from afnext.cli import main

    build = [
        "generator=template", "source=synthetic", "source.num_scenes=8", "source.min_duration=4.0",
        "source.max_duration=5.0", "source.min_events=2", "source.max_events=2", "source.speech=off",
        "generator.question_types=[after]", "generator.choices=0", "mode=instruct", "seed=0",
    ]  # fmt: skip
    overrides = [
        "experiment=tiny",
        f"paths.root_dir={tmp_path}",
        "run_name=first",
        "demo.build=[" + ",".join(f'"{b}"' for b in build) + "]",
        "logger=csv",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "data.batch_size=4",
        "data.num_workers=0",
    ]
    assert not (tmp_path / "data").exists()
    assert main(["train", *overrides]) == 0
    assert (tmp_path / "data" / "tiny_scenes" / "train.jsonl").is_file()
    assert (
        json.loads((tmp_path / "runs" / "first" / "stages" / "0_train" / "DONE").read_text())[
            "steps"
        ]
        == 2
    )


def test_init_from_applies_the_composed_attention_lora_and_loss(tmp_path):
    """Weights from a saved model, settings from the config: attention back ends, loss, LoRA adapters."""
    from afnext.training.run import build_model

    base = compose_config("train", ["experiment=tiny"])
    torch.manual_seed(0)
    build_model(base).save_pretrained(tmp_path / "model")
    cfg = compose_config(
        "train",
        [
            "experiment=tiny",
            "llm.attn_implementation=eager",
            "encoder.attn_implementation=eager",
            "model.loss_impl=naive",
            "llm.lora={r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}",
        ],
    )
    model = build_model(cfg, init_from=tmp_path / "model")
    assert model.llm.active_attn_implementation == "eager"
    assert model.encoder.tower.config._attn_implementation == "eager"
    assert model.loss_impl == "naive" and model.llm.has_lora
    assert any("lora_A" in n for n, _ in model.llm.named_parameters())


def test_a_resumed_stage_keeps_its_wandb_run_id(tmp_path):
    from afnext.training.loggers import stage_run_id, wandb_logger

    first = stage_run_id(tmp_path)
    assert (
        first == stage_run_id(tmp_path) and (tmp_path / "wandb_run_id").read_text().strip() == first
    )
    logger = wandb_logger(str(tmp_path), offline=True)
    assert logger._wandb_init["id"] == first and logger._wandb_init["resume"] == "allow"


@pytest.mark.slow
def test_each_stage_is_a_wandb_run_of_its_own(tmp_path):
    """Lightning leaves a W&B run open: the next stage (or command) in the process would log into it."""
    import wandb

    from afnext.training.run import train

    run = tmp_path / "runs" / "two"
    train(
        compose_config(
            "train",
            _overrides(
                tmp_path, run, "logger=wandb", "trainer.max_steps=1", "trainer.val_check_interval=1",
                "curriculum.order=[first,second]", "+curriculum.stages.first={}",
                "+curriculum.stages.second={}", "~curriculum.stages.train",
            ),
        )
    )  # fmt: skip
    offline = [
        sorted((run / "stages" / stage / "wandb").glob("offline-run-*"))
        for stage in ("0_first", "1_second")
    ]
    assert [len(runs) for runs in offline] == [1, 1]
    ids = {
        (run / "stages" / stage / "wandb_run_id").read_text().strip()
        for stage in ("0_first", "1_second")
    }
    assert len(ids) == 2 and all(any(i in str(p[0]) for i in ids) for p in offline)
    assert wandb.run is None


@pytest.mark.slow
def test_validate_prints_loss_and_accuracy_per_duration_bucket(tmp_path, capsys):
    """`afnext validate`: a table by duration bucket on stderr, the metrics (with the buckets) as JSON."""
    from afnext.cli import main
    from afnext.training.run import train

    run = tmp_path / "runs" / "v"
    overrides = _overrides(tmp_path, run, "trainer.max_steps=1", "trainer.val_check_interval=1")
    train(compose_config("train", overrides))
    capsys.readouterr()
    extra = ["optim.module.generate_batches=1", "optim.module.duration_buckets=[0.5,30]"]
    assert main(["validate", "--checkpoint", str(run), *overrides, *extra]) == 0
    out = capsys.readouterr()
    metrics = json.loads(out.out)
    assert {
        "val/loss",
        "val/accuracy",
        "val/loss/0.5-30s",
        "val/accuracy/0.5-30s",
    } <= metrics.keys()
    assert metrics["val/samples/0.5-30s"] == 4  # the 4 one-second validation clips
    assert "0.5-30s" in out.err and "validation by audio duration" in out.err


@pytest.mark.slow
def test_a_sweep_runs_one_job_per_value(tmp_path):
    """``afnext train ... -m key=a,b``: one run folder per value under the sweep's run name, each with the
    value it was given."""
    from afnext.cli import main

    overrides = _overrides(
        tmp_path, tmp_path / "unused", "trainer.max_steps=1", "trainer.val_check_interval=1"
    )
    overrides = [o for o in overrides if not o.startswith(("paths.run_dir=", "run_name="))]
    overrides += [f"paths.runs_dir={tmp_path / 'runs'}", "run_name=sweep"]
    assert main(["train", *overrides, "-m", "optim.lr.default=1e-3,3e-3"]) == 0
    from omegaconf import OmegaConf

    for job, lr in (("0", 1e-3), ("1", 3e-3)):
        folder = tmp_path / "runs" / "sweep" / job
        assert (folder / "final.json").is_file()
        assert OmegaConf.load(folder / "config.yaml").optim.lr.default == pytest.approx(lr)
