"""``afnext eval benchmark=... checkpoint=...``: answers, scores, missing audio, resuming, several benchmarks,
the predictions store, W&B tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afnext.cli import main
from afnext.evaluation.store import PredictionStore
from tests.evaluation.files import write_jsonl
from tests.inference.tiny import write_mmau, write_wav

BASE = ["generation=greedy", "generation.max_new_tokens=6", "trainer.accelerator=cpu", "--json"]


def _eval(capsys, *args: str) -> dict:
    code = main(["eval", *args, *BASE])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    return json.loads(out.out)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_answers_scores_and_lists_missing_audio(tmp_path, tiny_model_dir, capsys):
    root = write_mmau(tmp_path / "mmau", 10, missing=(3,))
    (root / "test-mini-audios" / "0007.wav").write_text("a text file posing as a wav")
    out = tmp_path / "out"
    args = [
        "benchmark=mmau",
        f"benchmark.root={root}",
        f"checkpoint={tiny_model_dir}",
        f"out_dir={out}",
    ]
    results = _eval(capsys, *args)
    mmau = results["benchmarks"]["mmau"]
    audio = mmau["audio"]
    assert audio["missing"] == 2 and audio["items"] == 10
    reasons = {Path(f["path"]).name: f["reason"] for f in audio["files"]}
    assert reasons["0003.wav"] == "missing" and reasons["0007.wav"].startswith("unreadable")
    assert mmau["scored"] == 8 and mmau["skipped"] == 2 and mmau["failed"]["count"] == 0
    assert mmau["official"]["total"] == 8 and results["run"]["generated"] == 8
    lines = _lines(out / "mmau" / "predictions.jsonl")
    assert [x["id"] for x in lines] == [f"item-{i:04d}" for i in range(10) if i not in (3, 7)]
    assert all(isinstance(x["prediction"], str) and x["prompt_tokens"] > 0 for x in lines)
    table = (out / "results.md").read_text()
    assert "| mmau | accuracy % (official rule) |" in table and "| 10 | 8 | 2 | 0 |" in table
    assert json.loads((out / "results.json").read_text())["benchmarks"]["mmau"] == mmau

    # the release's own file with model_output filled in scores alike with `afnext eval score`
    official = out / "mmau" / "mmau-test-mini.json"
    assert mmau["official_file"] == str(official)
    records = json.loads(official.read_text())
    assert [r["model_output"] for r in records if "model_output" in r] == [
        x["prediction"] for x in lines
    ]
    assert main(["eval", "score", "benchmark=mmau", f"predictions={official}", "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["official"] == mmau["official"] and scored["final_answer"] == mmau["final_answer"]

    # the same command again: nothing is generated, the results are the same
    again = _eval(capsys, *args)
    assert again["run"]["generated"] == 0 and again["benchmarks"]["mmau"]["resumed"] == 8
    assert again["benchmarks"]["mmau"]["official"] == mmau["official"]
    assert _lines(out / "mmau" / "predictions.jsonl") == lines

    # other settings do not resume these predictions; overwrite=true starts over
    assert main(["eval", *args, *BASE[:1], "generation.max_new_tokens=7", *BASE[2:]]) == 1
    err = capsys.readouterr().err
    assert "other settings (generation" in err and "overwrite=true" in err
    over = _eval(capsys, *args, "overwrite=true")
    assert over["run"]["generated"] == 8 and over["benchmarks"]["mmau"]["resumed"] == 0


def _mmar(root: Path, n: int) -> Path:
    choices = ["Forest", "City street", "Beach"]
    records = [
        {
            "id": f"mmar-{i}",
            "audio_path": f"./audio/{i}.wav",
            "question": "Where is it?",
            "choices": choices,
            "answer": choices[i % 3],
            "modality": "sound",
            "category": "Semantic Layer",
            "sub-category": "Scene",
            "language": "en",
            "source": "synthetic",
        }
        for i in range(n)
    ]
    for i in range(n):
        write_wav(root / "audio" / f"{i}.wav", 1.0 + i * 0.5, seed=10 + i)
    write_jsonl(root / "MMAR-meta.jsonl", records)
    return root


@pytest.mark.parametrize("form", ["list", "hydra"])
def test_several_benchmarks_in_one_run(tmp_path, tiny_model_dir, capsys, form):
    mmau, mmar = write_mmau(tmp_path / "mmau", 4), _mmar(tmp_path / "mmar", 3)
    if form == "list":  # the documented form
        picks = ["benchmark=[mmau,mmar]", f"benchmarks.mmau.root={mmau}"]
    else:  # the Hydra form it stands for, beside a `benchmark=`
        picks = ["benchmark=mmau", f"benchmark.root={mmau}", "+benchmark@benchmarks.mmar=mmar"]
    results = _eval(
        capsys,
        *picks,
        f"benchmarks.mmar.root={mmar}",
        f"checkpoint={tiny_model_dir}",
        f"out_dir={tmp_path / 'out'}",
    )
    assert set(results["benchmarks"]) == {"mmau", "mmar"}
    assert results["benchmarks"]["mmar"]["official"]["total"] == 3
    assert results["benchmarks"]["mmau"]["official"]["total"] == 4
    assert results["run"]["generated"] == 7
    assert len(_lines(tmp_path / "out" / "mmar" / "predictions.jsonl")) == 3
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| mmar |" in table and "| mmau |" in table


def test_a_missing_root_names_the_key(tmp_path, tiny_model_dir, capsys):
    code = main(["eval", "benchmark=[mmau,mmar]", f"checkpoint={tiny_model_dir}", *BASE])
    assert code == 1 and "benchmarks.mmau.root=DIR" in capsys.readouterr().err


def test_store_resumes_after_a_cut_line_and_resolves_duplicates(tmp_path):
    store = PredictionStore(tmp_path / "b")
    store.append([{"id": "a", "prediction": "x"}, {"id": "b", "prediction": None, "error": "oom"}])
    store.close()
    with (tmp_path / "b" / "predictions.jsonl").open("a") as handle:
        handle.write('{"id": "c", "predic')  # a kill in the middle of a line
    other = PredictionStore(tmp_path / "b", rank=1)
    other.append([{"id": "a", "prediction": "later duplicate"}, {"id": "b", "prediction": "y"}])
    other.close()
    assert store.finished() == {"a", "b"}
    store.append([{"id": "c", "prediction": "z"}])  # cuts the partial line first
    store.close()
    assert all(json.loads(line) for line in store.path.read_text().splitlines())
    merged = store.compact(["c", "b", "a"])
    assert [x["id"] for x in _lines(store.path)] == ["c", "b", "a"]
    assert merged["a"]["prediction"] == "x" and merged["b"]["prediction"] == "y"
    assert store.files() == [store.path]


def test_wandb_logger_gets_scores_and_a_table_with_playable_audio(
    tmp_path, tiny_model_dir, capsys, monkeypatch
):
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    tables, metrics = [], []
    monkeypatch.setattr(
        WandbLogger,
        "log_table",
        lambda self, key, columns, data, **kw: tables.append((key, columns, data)),
    )
    monkeypatch.setattr(WandbLogger, "log_metrics", lambda self, m, step=None: metrics.append(m))
    root = write_mmau(tmp_path / "mmau", 3)
    out = tmp_path / "out"
    _eval(capsys, "benchmark=mmau", f"benchmark.root={root}", f"checkpoint={tiny_model_dir}",
          f"out_dir={out}", "logger=wandb")  # fmt: skip
    key, columns, data = tables[0]
    assert key == "eval/mmau" and columns[:4] == ["id", "audio", "prompt", "prediction"]
    assert len(data) == 3 and all(isinstance(row[1], wandb.Audio) for row in data)
    assert "eval/mmau/accuracy % (official rule)" in metrics[0]
    assert list((out / "wandb").glob("offline-run-*"))


def test_a_judged_benchmark_with_judge_base_url_and_model(tmp_path, tiny_model_dir, capsys):
    """`judge.base_url=URL judge.model=M` as the issue writes them: LongAudioBench's answers are generated, then
    judged with its own 1-10 prompt, the judgments cached under the eval folder; a judge that cannot be built
    (its key variable unset) fails before anything is generated."""
    from tests.inference.fake_openai import FakeOpenAI

    records = [
        {"id": f"l{k}", "sound": f"l{k}.wav", "question": "What is heard?", "answer": "A tone."}
        for k in range(3)
    ]
    for k in range(3):
        write_wav(tmp_path / "lab" / f"l{k}.wav", 1.0 + k, seed=k)
    (tmp_path / "lab" / "longaudiobench.json").write_text(json.dumps(records))
    out = tmp_path / "out"
    args = ["benchmark=longaudiobench", f"benchmark.root={tmp_path / 'lab'}",
            f"checkpoint={tiny_model_dir}", f"out_dir={out}"]  # fmt: skip

    code = main(["eval", *args, "judge.base_url=http://127.0.0.1:9/v1", "judge.model=m",
                 "judge.api_key_env=AFNEXT_TEST_KEY_UNSET", *BASE])  # fmt: skip
    assert code == 1 and "AFNEXT_TEST_KEY_UNSET" in capsys.readouterr().err
    assert not (out / "longaudiobench" / "predictions.jsonl").exists()  # nothing generated

    def respond(body: dict) -> str:
        prompt = body["messages"][0]["content"]
        return "Score: 6" if "long audio recording" in prompt and "to 10" in prompt else "Score: 0"

    with FakeOpenAI(respond) as server:
        results = _eval(capsys, *args, f"judge.base_url={server.url}", "judge.model=judge-m",
                        "judge.api_key_env=null")  # fmt: skip
        assert server.calls == 3
    lab = results["benchmarks"]["longaudiobench"]
    assert lab["score"] == pytest.approx(60.0) and lab["judge"]["judged"] == 3
    assert (out / "judge_cache").is_dir()

    # without a judge the answers are kept and the score says why it is empty
    unjudged = _eval(capsys, *args)
    assert unjudged["run"]["generated"] == 0
    assert unjudged["benchmarks"]["longaudiobench"]["score"] is None


def test_mmsu_from_its_hugging_face_parquet_answers_as_from_files(tmp_path, tiny_model_dir, capsys):
    """MMSU as released (parquet with the clips embedded) gives the same answers as the same clips read from
    files through the official script's records: the embedded audio reaches the model whole. The clips are
    written once under paths.root_dir; the official file is JSON lines named after the benchmark."""
    from tests.evaluation.test_benchmarks_mcq import _mmsu_row, _write_parquet

    rows, records = [], []
    for k in range(4):
        clip = write_wav(tmp_path / "files" / f"s{k}.flac", 1.0 + 0.8 * k, seed=20 + k)
        row = _mmsu_row(f"s{k}", {"bytes": clip.read_bytes(), "path": clip.name})
        rows.append(row)
        records.append({**{x: y for x, y in row.items() if x != "audio"}, "audio_path": clip.name})
    _write_parquet(tmp_path / "MMSU" / "data" / "train-00000-of-00001.parquet", rows)
    write_jsonl(tmp_path / "files" / "mmsu.jsonl", records)
    home = tmp_path / "home"
    common = ["benchmark=mmsu", f"checkpoint={tiny_model_dir}", f"paths.root_dir={home}"]
    released = _eval(capsys, *common, f"benchmark.root={tmp_path / 'MMSU'}",
                     f"out_dir={tmp_path / 'a'}")  # fmt: skip
    exported = _eval(capsys, *common, f"benchmark.root={tmp_path / 'files'}",
                     "benchmark.file=mmsu.jsonl", f"out_dir={tmp_path / 'b'}")  # fmt: skip
    assert released["benchmarks"]["mmsu"]["audio"]["missing"] == 0
    assert released["benchmarks"]["mmsu"]["official"] == exported["benchmarks"]["mmsu"]["official"]
    answers = [x["prediction"] for x in _lines(tmp_path / "a" / "mmsu" / "predictions.jsonl")]
    assert len(answers) == 4 and len(set(answers)) > 1, answers  # answers that depend on the clip
    assert answers == [
        x["prediction"] for x in _lines(tmp_path / "b" / "mmsu" / "predictions.jsonl")
    ]
    assert len(list((home / "cache" / "benchmark_audio" / "mmsu").glob("*.flac"))) == 4
    official = Path(released["benchmarks"]["mmsu"]["official_file"])
    assert official.name == "mmsu.jsonl"
    assert [r["response"] for r in _lines(official)] == answers
