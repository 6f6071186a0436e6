"""`afnext eval score benchmark=NAME predictions=FILE --json` (the contract) and every benchmark YAML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from afnext.cli import main
from afnext.config import compose_config, config_groups
from afnext.evaluation.benchmarks import Benchmark

CHOICES = ["Man", "Woman", "Child", "Robot"]


def _mmau_record(ident: str, answer: str, task: str, difficulty: str, **extra) -> dict:
    return {
        "id": ident,
        "audio_id": f"./test-mini-audios/{ident}.wav",
        "question": "Who speaks?",
        "choices": CHOICES,
        "answer": answer,
        "dataset": "AudioSet",
        "task": task,
        "split": "test-mini",
        "category": "Reasoning",
        "sub-category": "Acoustic Source Inference",
        "difficulty": difficulty,
        **extra,
    }


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["eval", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_score_mmau_json_contract(tmp_path, capsys):
    records = [
        _mmau_record("1", "Man", "sound", "easy", model_output="Man"),
        # a chain naming other options: wrong by the raw rule, right on the final answer
        _mmau_record(
            "2",
            "Woman",
            "speech",
            "hard",
            model_output="<think>Not a man, not a child.</think>(B) Woman",
        ),
        _mmau_record("3", "Child", "music", "medium", model_output="A robot"),
        _mmau_record("4", "Robot", "speech", "easy"),  # no model_output: skipped
    ]
    path = tmp_path / "mmau-test-mini.json"
    path.write_text(json.dumps(records))
    code, out, _ = _run(capsys, "score", "benchmark=mmau", f"predictions={path}", "--json")
    assert code == 0
    result = json.loads(out)
    assert {"official", "final_answer"} <= set(result)
    official, final = result["official"], result["final_answer"]
    assert official["accuracy"] == pytest.approx(100 / 3) and official["total"] == 3
    assert final["accuracy"] == pytest.approx(200 / 3) and final["correct"] == 2
    assert result["skipped"] == 1 and result["benchmark"] == "mmau"
    assert set(official["breakdown"]) == {"task", "category", "sub-category", "difficulty"}
    assert official["breakdown"]["task"] == {
        "sound": {"accuracy": 100.0, "correct": 1, "total": 1},
        "music": {"accuracy": 0.0, "correct": 0, "total": 1},
        "speech": {"accuracy": 0.0, "correct": 0, "total": 1},
    }
    assert final["breakdown"]["task"]["speech"] == {"accuracy": 100.0, "correct": 1, "total": 1}
    assert official["breakdown"]["difficulty"]["easy"]["total"] == 1
    assert result["predictions_file"] == str(path)


def test_eval_score_mmar_jsonl_contract(tmp_path, capsys):
    base = {
        "question": "Where?",
        "choices": ["Forest", "City street", "Beach"],
        "category": "Semantic Layer",
        "sub-category": "Content Analysis",
        "language": "en",
        "source": "youtube",
    }
    records = [
        {
            **base,
            "id": "a",
            "audio_path": "./audio/a.wav",
            "answer": "City street",
            "modality": "sound",
            "answer_prediction": "The city street",
        },
        {
            **base,
            "id": "b",
            "audio_path": "./audio/b.wav",
            "answer": "Beach",
            "modality": "mix-sound-speech",
            "answer_prediction": "<think>forest or beach?</think>C",
        },
        {
            **base,
            "id": "c",
            "audio_path": "./audio/c.wav",
            "answer": "Forest",
            "modality": "sound",
            "category": "Signal Layer",
            "answer_prediction": "",
        },
    ]
    path = tmp_path / "MMAR-meta.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, out, _ = _run(capsys, "score", f"predictions={path}", "benchmark=mmar", "--json")
    assert code == 0
    result = json.loads(out)
    official, final = result["official"], result["final_answer"]
    assert (official["correct"], official["total"]) == (1, 3)
    assert (final["correct"], final["total"]) == (2, 3)
    assert list(official["breakdown"]["modality"]) == ["sound", "mix-sound-speech"]
    assert official["breakdown"]["modality"]["sound"] == {
        "accuracy": 50.0,
        "correct": 1,
        "total": 2,
    }
    assert final["breakdown"]["modality"]["mix-sound-speech"]["accuracy"] == 100.0
    assert list(official["breakdown"]["category"]) == ["Signal Layer", "Semantic Layer"]
    assert set(official["breakdown"]) == {"modality", "category", "sub-category"}


def test_eval_score_prints_a_table_without_json(tmp_path, capsys):
    path = tmp_path / "mmau.json"
    path.write_text(json.dumps([_mmau_record("1", "Man", "sound", "easy", model_output="man")]))
    code, out, _ = _run(capsys, "score", "benchmark=mmau", f"predictions={path}")
    assert code == 0
    assert "overall" in out and "task: sound" in out and "100.00" in out


def test_eval_score_errors_name_what_to_fix(tmp_path, capsys):
    path = tmp_path / "mmau.json"
    path.write_text(json.dumps([_mmau_record("1", "Man", "sound", "easy")]))
    code, _, err = _run(capsys, "score", "benchmark=mmau", f"predictions={path}")
    assert code == 1 and "'model_output'" in err
    code, _, err = _run(capsys, "score", "benchmark=mmau")
    assert code == 1 and "predictions=FILE" in err
    code, _, err = _run(capsys, "score", "benchmark=nope", f"predictions={path}")
    assert code == 1 and "nope" in err
    path.write_text(json.dumps([_mmau_record("1", "Man", "sound", "easy", model_output=None)]))
    code, _, err = _run(capsys, "score", "benchmark=mmau", f"predictions={path}")
    assert code == 1 and "not text" in err


def test_eval_score_id_prediction_file_with_root(tmp_path, capsys):
    chapter = tmp_path / "LibriSpeech" / "test-other" / "1" / "2"
    chapter.mkdir(parents=True)
    (chapter / "1-2.trans.txt").write_text("1-2-0 HELLO WORLD\n")
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"id": "1-2-0", "prediction": "Hello, world."}) + "\n")
    code, out, _ = _run(
        capsys,
        "score",
        "benchmark=librispeech_test_other",
        f"benchmark.root={tmp_path}",
        f"predictions={predictions}",
        "--json",
    )
    assert code == 0 and json.loads(out)["wer"] == 0.0


def _benchmark_options() -> list[str]:
    return config_groups().get("benchmark", [])


def test_every_benchmark_has_a_yaml():
    expected = {
        "mmau",
        "mmau_pro",
        "mmar",
        "mmsu",
        "muchomusic",
        "longaudiobench",
        "librispeech_test_clean",
        "librispeech_test_other",
        "audiocaps",
        "clotho",
        "covost2_en_de",
        "tacot",
    }
    assert expected <= set(_benchmark_options())


@pytest.mark.parametrize("name", _benchmark_options())
def test_benchmark_yaml_composes_and_instantiates(name):
    cfg = compose_config("eval", [f"benchmark={name}", "benchmark.root=/x"])
    assert cfg.benchmark.name == name and "generation" in cfg.benchmark
    adapter = instantiate(cfg.benchmark, _convert_="all")
    assert isinstance(adapter, Benchmark)
    assert adapter.name == name and adapter.root == Path("/x")
    assert adapter.generation.get("max_new_tokens", 0) > 0


def test_several_benchmarks_compose_side_by_side():
    cfg = compose_config(
        "eval", ["benchmark=mmau", "+benchmark@benchmarks.mmar=mmar", "benchmarks.mmar.root=/m"]
    )
    assert cfg.benchmark.name == "mmau" and cfg.benchmarks.mmar.name == "mmar"
    assert instantiate(cfg.benchmarks.mmar, _convert_="all").root == Path("/m")


def test_benchmark_list_as_the_issue_writes_it():
    """`benchmark=[mmau,mmar,librispeech_clean]`: the short LibriSpeech names are the test-set configs."""
    from afnext.cli.inference import _eval_overrides

    cfg = compose_config(
        "eval",
        _eval_overrides(
            ["benchmark=[mmau,mmar,librispeech_clean]", "benchmarks.librispeech_clean.root=/l"]
        ),
    )
    assert cfg.get("benchmark") is None
    assert list(cfg.benchmarks) == ["mmau", "mmar", "librispeech_clean"]
    clean = instantiate(cfg.benchmarks.librispeech_clean, _convert_="all")
    full = instantiate(
        compose_config("eval", ["benchmark=librispeech_test_clean", "benchmark.root=/l"]).benchmark,
        _convert_="all",
    )
    assert clean.name == "librispeech_clean" and clean.root == Path("/l")
    same = {"name": full.name, "audio_cache": full.audio_cache}  # both follow the name
    assert {**vars(clean), **same} == vars(full)  # subset, prompt, generation, ...
