"""Closed MMAU-Pro questions matched by embeddings from a (fake) OpenAI-compatible /v1/embeddings server:
the nearest choice by cosine similarity, NeMo-Skills' correctness rule, the client's retries and cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from afnext.errors import ConfigError
from afnext.evaluation.benchmarks import MMAUPro, score_file
from afnext.evaluation.metrics.embedding_match import EmbeddingMatcher, build_matcher
from tests.inference.fake_openai import FakeOpenAI


def _matcher(url: str, **options) -> EmbeddingMatcher:
    return EmbeddingMatcher(url, "nv-embed", backoff=0.01, timeout=5.0, **options)


def test_nearest_choice_by_cosine_and_ties_to_the_first(tmp_path: Path) -> None:
    def embed(text: str) -> list[float]:  # fixed directions: a dog (1, 0), a cat (0, 1)
        table = {"a dog": [1.0, 0.0], "a cat": [0.0, 1.0], "rain": [-1.0, 0.0]}
        if text in table:
            return table[text]
        return (
            [10.0, 9.0] if "bark" in text else [1.0, 1.0]
        )  # long vectors: cosine, not dot, decides

    with FakeOpenAI(embed=embed, fail_first=1) as server:  # a 500 first: retried
        matcher = _matcher(server.url, cache_dir=tmp_path / "cache")
        picks = matcher.match(
            [
                ("it barks", ["a cat", "a dog", "rain"]),
                ("a cat", ["a dog", "a cat"]),
                ("half and half", ["a dog", "a cat"]),  # equally near both: the first
            ]
        )
        calls = server.calls
        bodies = server.bodies()
        again = _matcher(server.url, cache_dir=tmp_path / "cache").match(
            [("a cat", ["a dog", "a cat"])]
        )
        assert server.calls == calls  # every text cached
    assert picks == [1, 1, 0] and again == [1]
    assert calls == 1 + 5  # the failed call, then each distinct text once
    assert all(b["model"] == "nv-embed" and isinstance(b["input"], str) for b in bodies)
    assert bodies[0]["input"] in {"it barks", "a cat", "a dog", "rain", "half and half"}


def test_failed_embeddings_leave_their_question_unmatched() -> None:
    with FakeOpenAI(embed=lambda text: [0.0, 0.0] if text == "silence" else [1.0, 2.0]) as server:
        matcher = _matcher(server.url)
        assert matcher.match([("silence", ["a", "b"]), ("x", ["a", "b"]), ("x", [])]) == [
            None,
            0,
            None,
        ]
    assert matcher.failures == {"zero_vector": 1}
    unreachable = _matcher("http://127.0.0.1:9/v1", max_retries=0)
    assert unreachable.match([("x", ["a", "b"])]) == [None]
    assert unreachable.failures == {"connection": 3}


def test_build_matcher_from_config() -> None:
    assert build_matcher(None, where="benchmark.embedder") is None
    assert build_matcher({"base_url": None, "model": None}, where="benchmark.embedder") is None
    with pytest.raises(ConfigError, match=r"benchmark\.embedder\.model is not set"):
        build_matcher({"base_url": "http://127.0.0.1:9/v1"}, where="benchmark.embedder")
    with pytest.raises(ConfigError, match=r"benchmark\.embedder\.dims: unknown setting"):
        build_matcher(
            {"base_url": "http://x/v1", "model": "m", "dims": 3}, where="benchmark.embedder"
        )
    with pytest.raises(ConfigError, match="AFNEXT_TEST_UNSET_KEY"):
        build_matcher(
            {"base_url": "http://x/v1", "model": "m", "api_key_env": "AFNEXT_TEST_UNSET_KEY"},
            where="benchmark.embedder",
        )


def test_mmau_pro_closed_questions_by_embeddings(tmp_path: Path, capsys) -> None:
    """`benchmark.embedder.base_url=... .model=...`: closed questions by the nearest choice (raw output and final
    answer), an empty output wrong, NeMo-Skills' rule named; without it the token rule and its note."""
    from afnext.cli import main

    choices = ["a dog barking", "a car horn", "rain falling"]
    outputs = {
        "c1": "I hear a dog, barking loudly",  # nearest: the dog
        "c2": "Rain, I think.",  # nearest: rain; the token rule wants "falling" too
        "c3": "<think>maybe a car horn</think>B",  # raw: the car horn; final answer: letter B = the car horn
        "c4": "",
    }
    answers = {
        "c1": "a dog barking",
        "c2": "rain falling",
        "c3": "a car horn",
        "c4": "rain falling",
    }
    records = [
        {"id": k, "audio_path": [f"data/{k}.wav"], "question": "Which?", "choices": choices,
         "answer": answers[k], "category": "sound", "model_output": v}
        for k, v in outputs.items()
    ]  # fmt: skip
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    with FakeOpenAI() as server:  # bag-of-words embeddings
        argv = ["eval", "score", "benchmark=mmau_pro", f"predictions={path}",
                f"benchmark.embedder.base_url={server.url}", "benchmark.embedder.model=nv-embed", "--json"]  # fmt: skip
        assert main(argv) == 0
        result = json.loads(capsys.readouterr().out)
    official, final = result["official"], result["final_answer"]
    assert (official["correct"], official["total"]) == (
        3,
        4,
    )  # c1, c2, c3 by nearest choice; c4 empty
    assert (final["correct"], final["total"]) == (3, 4)
    assert "nv-embed embeddings" in official["rule"] and "NeMo-Skills" in official["rule"]
    assert any("OpenAI-compatible server" in note for note in result["notes"])

    plain = score_file(MMAUPro(), path)  # no embedder: the token rule, and the note saying so
    assert plain["official"]["correct"] < 3 and any("token rule" in n for n in plain["notes"])


def test_unembedded_questions_are_left_out_of_accuracy_and_overall_alike() -> None:
    """A closed question whose output cannot be embedded is not counted, in its accuracy and in `overall`
    alike; the note counts this call's failures only (scoring twice reports the same)."""
    choices = ["a dog", "a cat"]
    records = [
        {"id": f"c{k}", "audio_path": [f"{k}.wav"], "question": "Which?", "choices": choices,
         "answer": "a dog", "category": "sound", "model_output": out}
        for k, out in enumerate(["a dog", "a dog barks", "a dog indeed", "silence"])
    ]  # fmt: skip
    zero = {"silence"}
    with FakeOpenAI(embed=lambda t: [0.0] * 4 if t in zero else [1.0, 0.0, 0.0, 0.0]) as server:
        pro = MMAUPro(embedder={"base_url": server.url, "model": "m", "max_retries": 0})
        items = pro.items(records)
        outputs = {r["id"]: r["model_output"] for r in records}
        first, second = pro.score(items, outputs), pro.score(items, outputs)
    for result in (first, second):
        assert (result["official"]["correct"], result["official"]["total"]) == (3, 3)
        assert result["official"]["not_counted"] == 1
        assert result["overall"]["official"] == {"score": 100.0, "parts": ["closed"]}
        assert any(
            "{'zero_vector': 1}" in n and "1 on the raw output" in n for n in result["notes"]
        )
