"""Training system: schedule, prompt cutting, curriculum planning, atomic checkpoints, chat filtering,
and a real two-stage run on a small manifest (DONE markers, final.json, resume skips finished stages)."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import pytest
import torch

from afnext.config import compose_config
from afnext.errors import ConfigError
from afnext.evaluation.chat import ThinkFilter
from afnext.storage import atomic_torch_save
from afnext.training.checkpoint_io import AtomicCheckpointIO
from afnext.training.curriculum import Stage, plan_stages
from afnext.training.module import prompt_batch, warmup_cosine
from tests.data.test_dataset import write_tone

DEFAULTS = {
    "trainable": ["connector"],
    "lr": {"default": 1e-4},
    "max_audio_seconds": 30,
    "max_length": 8192,
    "max_steps": 100,
    "warmup_steps": 10,
}


def test_warmup_then_cosine_to_the_floor():
    kw = {"warmup_steps": 10, "total_steps": 110, "min_lr_ratio": 0.1}
    assert warmup_cosine(0, **kw) == pytest.approx(0.1)
    assert warmup_cosine(9, **kw) == pytest.approx(1.0)
    assert warmup_cosine(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(110, **kw) == pytest.approx(0.1)
    assert warmup_cosine(500, **kw) == pytest.approx(0.1)  # past the end: stays at the floor
    values = [warmup_cosine(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_validation_scorer_reads_options_like_the_evaluation():
    from afnext.training.module import default_scorer

    options = ["low tone", "melody", "noise burst", "rising chirp"]
    assert default_scorer("(B) melody", "(B) melody", "", options)
    assert default_scorer("melody", "(B) melody", "", options)  # the option's words pick it
    assert not default_scorer("(D) melody", "(B) melody", "", options)  # the letter picks (D)
    assert not default_scorer("(B) melody", "(C) noise burst", "", options)
    assert default_scorer("It is 2.", "It is 2.") and not default_scorer("It is 1.", "It is 2.")


def test_chance_is_one_over_the_options_or_the_best_fixed_open_answer():
    from afnext.evaluation.qa import chance_of

    def row(reference, choices=(), kind="order"):
        return {"reference": reference, "choices": list(choices), "question_type": kind}

    options = ["low tone", "melody", "noise burst", "rising chirp"]
    rows = [
        row("(A) low tone", options),
        row("(B) melody", options[:2]),
        row("high tone"),
        row("high tone"),
        row("melody"),
        row("2", kind="count"),
    ]
    # 1/4 + 1/2, then "high tone" is right for 2 of 3 open order questions, "2" for the count question.
    assert chance_of(rows) == (0.25 + 0.5 + 2 + 1) / 6
    assert chance_of([row("melody"), row("low tone")]) == 0.5
    assert chance_of([]) is None


def test_prompt_batch_cuts_at_the_first_answer_and_left_pads():
    ids = torch.tensor([[5, 6, 7, 8, 9, 0], [5, 6, 10, 11, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, 8, 9, -100], [-100, -100, 10, 11, -100, -100]])
    inputs, targets = prompt_batch({"input_ids": ids, "attention_mask": mask, "labels": labels}, 0)
    assert targets == [[8, 9], [10, 11]]
    assert inputs["input_ids"].tolist() == [[5, 6, 7], [0, 5, 6]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    assert "input_features" not in inputs


def test_plan_fills_gaps_from_the_run_and_picks_one_stage():
    stages = plan_stages(
        [{"name": "a"}, {"name": "b", "trainable": ["llm"], "lr": 3e-5, "max_steps": 7}],
        defaults=DEFAULTS,
    )
    assert [s.name for s in stages] == ["a", "b"]
    assert stages[0].trainable == ("connector",) and stages[0].lr == {"default": 1e-4}
    assert stages[1] == Stage("b", ("llm",), {"default": 3e-5}, 30, 8192, 7, 10)
    assert plan_stages([{"name": "a"}, {"name": "b"}], defaults=DEFAULTS, only="b")[0].name == "b"


@pytest.mark.parametrize(
    ("stages", "only", "match"),
    [
        ([], None, "empty"),
        ([{"name": "a", "lr_typo": 1}], None, "unknown keys.*lr_typo"),
        ([{"trainable": ["llm"]}], None, r"stages\[0\] needs a name"),
        ([{"name": "a"}, {"name": "a"}], None, "repeat"),
        ([{"name": "a"}], "b", "stage='b' is not in the curriculum"),
    ],
)
def test_bad_curricula_name_the_problem(stages, only, match):
    with pytest.raises(ConfigError, match=match):
        plan_stages(stages, defaults=DEFAULTS, only=only)


def test_stages_are_keyed_by_name_and_run_in_the_given_order():
    stages = {"b": {"max_steps": 3}, "a": {"lr": 1e-3}}
    planned = plan_stages(stages, defaults=DEFAULTS, order=["a", "b"])
    assert [s.name for s in planned] == ["a", "b"] and planned[0].lr == {"default": 1e-3}
    with pytest.raises(ConfigError, match=r"disagree: no stage \['c'\]; not in the order \['b'\]"):
        plan_stages(stages, defaults=DEFAULTS, order=["a", "c"])
    with pytest.raises(ConfigError, match=r"curriculum\.order is missing"):
        plan_stages(stages, defaults=DEFAULTS)
    cfg = compose_config(
        "train", ["curriculum=afnext", "curriculum.stages.midtrain2.lr.default=1e-4"]
    )
    from afnext.training.run import _stages

    assert {s.name: s.lr for s in _stages(cfg)}["midtrain2"] == {"default": 1e-4}


@pytest.mark.parametrize(("name", "count"), [("single", 1), ("af3", None), ("afnext", 8)])
def test_shipped_curricula_plan(name, count):
    from afnext.training.run import _stages

    cfg = compose_config(
        "train", [f"curriculum={name}", "data.train=[x.jsonl]", "data.val=[y.jsonl]"]
    )
    stages = _stages(cfg)
    if count is not None:
        assert len(stages) == count
    assert all(s.max_steps > 0 and s.trainable for s in stages)


def test_afnext_curriculum_follows_the_paper_order():
    from afnext.training.run import _stages

    cfg = compose_config("train", ["curriculum=afnext", "data.train=[x]", "data.val=[y]"])
    stages = _stages(cfg)
    assert stages[0].trainable == ("connector",)  # pre-train 1: encoder and LLM frozen
    assert "llm" not in stages[1].trainable
    assert [s.max_audio_seconds for s in stages][:3] == [30, 60, 600]
    assert stages[-1].max_audio_seconds == 1800  # 30 min by the CoT / post-train stages


def test_the_think_experiment_runs_cot_sft_then_grpo():
    from afnext.training.run import _stages

    stages = _stages(compose_config("train", ["experiment=afnext_think"]))
    assert [(s.name, s.objective) for s in stages] == [("cot", "sft"), ("cot_grpo", "grpo")]


def test_a_list_of_stages_runs_in_curriculum_order_and_an_unknown_one_is_named():
    from afnext.training.run import _stages

    base = ["curriculum=afnext", "data.train=[x]", "data.val=[y]"]
    stages = _stages(compose_config("train", [*base, "stage=[midtrain2,pretrain1]"]))
    assert [s.name for s in stages] == ["pretrain1", "midtrain2"]
    with pytest.raises(ConfigError, match=r"\['posttrain2'\] not in the curriculum"):
        _stages(compose_config("train", [*base, "stage=[cot,posttrain2]"]))


@pytest.mark.parametrize(
    "experiment", ["tiny", "af3", "afnext_instruct", "afnext_think", "afnext_captioner"]
)
def test_every_experiment_composes_and_plans(experiment):
    from afnext.training.run import _stages

    cfg = compose_config("train", [f"experiment={experiment}"])
    assert _stages(cfg)
    assert cfg.encoder._target_ and cfg.connector._target_ and cfg.llm._target_


def test_atomic_save_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "ckpt" / "last.ckpt"
    atomic_torch_save({"step": 1}, target)
    assert torch.load(target)["step"] == 1

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"step": 2, "bad": Boom()}, target)
    assert torch.load(target)["step"] == 1  # the old checkpoint is intact
    assert os.listdir(target.parent) == ["last.ckpt"]  # no temporary file left behind
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 3}, target)
    assert io.load_checkpoint(target)["step"] == 3
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({}, target, storage_options={"x": 1})


def _stream(filt: ThinkFilter, text: str, step: int = 3) -> str:
    return "".join(filt.new_text(text[:end]) for end in range(step, len(text) + step, step))


def test_think_filter_hides_reasoning_unless_asked():
    text = "<think>\n[00:03.0] a dog barks\n</think>\nThe dog barks after the door."
    assert (
        _stream(ThinkFilter(show_think=False), text) == "[thinking] The dog barks after the door."
    )
    assert _stream(ThinkFilter(show_think=True), text) == text
    held = ThinkFilter(show_think=False)
    assert held.visible("Answer <thi") == "Answer "  # a tag being generated is held back


def _manifest(root: Path, name: str, n: int) -> Path:
    write_tone(root / "tone.wav", 1.0)
    rows = [
        {
            "id": f"{name}-{k}",
            "sound": "tone.wav",
            "duration": 1.0,
            "conversations": [
                {"from": "human", "value": f"<sound>\nWhat is {k % 3}?"},
                {"from": "gpt", "value": f"It is {k % 3}."},
            ],
        }
        for k in range(n)
    ]
    path = root / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_two_stage_run_writes_done_markers_and_resume_skips_them(tmp_path):
    from afnext.model import AudioLanguageModel
    from afnext.training.run import train

    train_path, val_path = _manifest(tmp_path, "train", 8), _manifest(tmp_path, "val", 4)
    run = tmp_path / "runs" / "r1"
    overrides = [
        "experiment=tiny",
        "data=manifest",
        f"data.train=[{train_path}]",
        f"data.val=[{val_path}]",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.max_audio_seconds=8",
        "logger=csv",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        f"paths.run_dir={run}",
        "run_name=r1",
        "curriculum.order=[connector_only,all]",
        "~curriculum.stages.train",
        "+curriculum.stages.connector_only={trainable: [connector], max_steps: 2}",
        "+curriculum.stages.all={trainable: [connector, llm], lr: 1.0e-3, max_steps: 3}",
    ]
    cfg = compose_config("train", overrides)
    final = train(cfg)
    stages = sorted(p.name for p in (run / "stages").iterdir())
    assert stages == ["0_connector_only", "1_all"]
    # The validation answers (the W&B table's rows) name their audio and question.
    answered = [
        json.loads(line)
        for line in (run / "stages" / "0_connector_only" / "predictions" / "step_2.jsonl")
        .read_text()
        .splitlines()
    ]
    assert len(answered) == 4
    for row in answered:
        k = int(row["id"].rsplit("-", 1)[1])
        assert row["sound"] == str(tmp_path / "tone.wav")
        assert row["question"] == f"<sound>\nWhat is {k % 3}?"
        assert row["reference"] == f"It is {k % 3}." and isinstance(row["correct"], bool)
    for name, steps in (("0_connector_only", 2), ("1_all", 3)):
        folder = run / "stages" / name
        assert json.loads((folder / "DONE").read_text())["steps"] == steps
        assert (folder / "checkpoints" / "last.ckpt").is_file()
        assert (
            torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
            == steps
        )
    assert json.loads((run / "final.json").read_text())["model"] == str(final.resolve())
    # Each stage trained exactly the parts it names: frozen parts are bit-identical to where the stage
    # started, trainable ones moved. The initial weights are the run's: same seed, same config.
    import lightning.pytorch as pl

    from afnext.training.run import build_model

    pl.seed_everything(int(cfg.seed))
    initial = build_model(cfg)
    after_0 = AudioLanguageModel.from_pretrained(run / "stages" / "0_connector_only" / "model")
    after_1 = AudioLanguageModel.from_pretrained(final)
    for before, after, trained in (
        (initial, after_0, {"connector"}),
        (after_0, after_1, {"connector", "llm"}),
    ):
        for part in ("encoder", "time_embedding", "connector", "llm"):
            old = dict(before.part_parameters(part))
            new = dict(after.part_parameters(part))
            assert old.keys() == new.keys(), part
            moved = [n for n in old if not torch.equal(old[n], new[n])]
            if part in trained:
                assert moved, f"{part} did not train"
            else:
                assert not moved, f"{part} is frozen but changed: {moved[:3]}"
    assert all(math.isfinite(float(p.abs().sum())) for p in after_1.parameters())

    done_times = [(run / "stages" / s / "DONE").stat().st_mtime_ns for s in stages]
    assert train(compose_config("train", overrides)) == final  # everything done: nothing reruns
    assert [(run / "stages" / s / "DONE").stat().st_mtime_ns for s in stages] == done_times
