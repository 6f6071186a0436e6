"""The demo's held-out accuracy and ``afnext eval benchmark=tacot`` agree: the demo scores its test split with
``evaluate_manifest``, which plans, answers and scores through the same functions as ``afnext eval``."""

from __future__ import annotations

import json

import pytest

from afnext.cli import main

BUILD = [
    "generator=template", "source=synthetic", "source.num_scenes=160", "source.min_duration=4.0",
    "source.max_duration=6.0", "source.min_events=2", "source.max_events=3", "source.speech=off",
    "generator.question_types=[after]", "generator.choices=0", "mode=instruct", "seed=1",
]  # fmt: skip


@pytest.mark.slow
def test_eval_on_the_demo_model_reports_the_demo_accuracy(tmp_path, capsys):
    overrides = [
        f"paths.root_dir={tmp_path}",
        "run_name=demo",
        "demo.build=[" + ",".join(f'"{b}"' for b in BUILD) + "]",
        "trainer.max_steps=80",
        "trainer.val_check_interval=80",
        "trainer.limit_val_batches=1",
        "data.batch_size=8",
        "data.num_workers=0",
        "logger=csv",
        "demo.eval_batch_size=4",
    ]
    assert main(["demo", *overrides]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]  # accuracy=A chance=C
    run, data = tmp_path / "runs" / "demo", tmp_path / "data" / "tiny_scenes"
    demo_predictions = [
        json.loads(x) for x in (run / "test_predictions.jsonl").read_text().splitlines()
    ]

    assert main(["eval", "benchmark=tacot", f"benchmark.root={data}", f"checkpoint={run}",
                 "generation=greedy", "generation.max_new_tokens=12", "engine.max_batch_size=4",
                 "trainer.accelerator=cpu", f"out_dir={tmp_path / 'eval'}", "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)["benchmarks"]["tacot"]
    accuracy = result["overall"]["accuracy"]
    assert printed.startswith(f"accuracy={accuracy:.3f} ")
    assert result["scored"] == result["items"] == len(demo_predictions) > 4
    assert sum(bool(p["prediction"]) for p in demo_predictions) > 4  # trained to answer in words
    lines = [
        json.loads(x)
        for x in (tmp_path / "eval" / "tacot" / "predictions.jsonl").read_text().splitlines()
    ]
    assert {x["id"]: x["prediction"] for x in lines} == {
        p["id"]: p["prediction"] for p in demo_predictions
    }
    assert sum(p["correct"] for p in demo_predictions) / len(demo_predictions) == pytest.approx(
        accuracy, abs=5e-5
    )
