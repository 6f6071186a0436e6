"""The LLM judge against a local fake OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path

import pytest

from afnext.errors import ConfigError
from afnext.evaluation.judge import DEFAULT_JUDGE_PROMPT, LLMJudge
from tests.inference.fake_openai import FakeOpenAI, Reply

# The fake judge's reply to each prediction (found in the prompt).
REPLIES = {
    "a dog barks": "It matches the reference.\nScore: 9",
    "a cat": "Score: 2 at first sight, but on reflection it is close.\nFinal score: 6.5",
    "nothing": "I cannot tell.",
    "a car": "Score: 42",
}


def _respond(body: dict) -> str | Reply:
    prompt = body["messages"][0]["content"]
    prediction = prompt.split("Candidate answer: ")[1].split("\n")[0]
    if prediction == "slow":
        return Reply(delay=30)  # hangs past the judge's timeout
    return REPLIES.get(prediction, "Score: 5")


def _items(*predictions: str) -> list[dict[str, str]]:
    return [
        {"question": "What is heard?", "reference": "A dog barks.", "prediction": p}
        for p in predictions
    ]


def _judge(url: str, **options: object) -> LLMJudge:
    options = {"api_key_env": None, "backoff": 0.01, "timeout": 5.0, **options}
    return LLMJudge(url, "judge-model", DEFAULT_JUDGE_PROMPT, **options)  # type: ignore[arg-type]


def test_scores_parsed_last_match_wins_bad_replies_counted() -> None:
    with FakeOpenAI(_respond) as server:
        judge = _judge(server.url)
        scores = judge.score(_items("a dog barks", "a cat", "nothing", "a car"))
        body = server.bodies()[0]
    assert scores == [9.0, 6.5, None, None]
    assert judge.failures == 2
    assert judge.failure_reasons == {"unparsable": 1, "out_of_range": 1}
    assert body["temperature"] == 0 and body["model"] == "judge-model"
    assert "Reference answer: A dog barks." in body["messages"][0]["content"]


def test_cache_hit_on_a_second_run_sends_no_request(tmp_path: Path) -> None:
    items = _items("a dog barks", "a cat", "other")
    with FakeOpenAI(_respond) as server:
        first = _judge(server.url, cache_dir=tmp_path).score(items)
        assert server.calls == 3
        second = _judge(server.url, cache_dir=tmp_path).score(items)
        assert server.calls == 3
        other_model = LLMJudge(
            server.url, "another-judge", DEFAULT_JUDGE_PROMPT, api_key_env=None, cache_dir=tmp_path
        )
        other_model.score(items[:1])  # the model is part of the key
        assert server.calls == 4
    assert first == second == [9.0, 6.5, 5.0]


def test_retry_after_500_then_scored() -> None:
    with FakeOpenAI(_respond, fail_first=1) as server:
        judge = _judge(server.url, max_retries=2)
        assert judge.score(_items("a dog barks")) == [9.0]
        assert server.calls == 2
    assert judge.failures == 0


def test_timeout_is_a_counted_none_and_the_others_are_scored() -> None:
    with FakeOpenAI(_respond) as server:
        judge = _judge(server.url, timeout=0.3, max_retries=1, concurrency=4)
        scores = judge.score(_items("a dog barks", "slow", "a cat"))
    assert scores == [9.0, None, 6.5]
    assert judge.failures == 1 and judge.failure_reasons == {"timeout": 1}


def test_template_and_pattern_errors_are_config_errors() -> None:
    with FakeOpenAI(_respond) as server:
        judge = _judge(server.url)
        with pytest.raises(ConfigError, match="judge item 1 has no field 'prediction'"):
            judge.score([*_items("x"), {"question": "q", "reference": "r"}])
        assert server.calls == 0  # checked before anything is sent
        with pytest.raises(ConfigError, match="exactly one"):
            _judge(server.url, score_pattern=r"(\d+)/(\d+)")
        with pytest.raises(ConfigError, match="positional field"):
            LLMJudge(server.url, "m", "Grade {0}", api_key_env=None)
        with pytest.raises(ConfigError, match="min_score=5 is above"):
            _judge(server.url, min_score=5, max_score=1)
    custom = LLMJudge(
        "http://127.0.0.1:9/v1",
        "m",
        "{answer}",
        api_key_env=None,
        score_pattern=r"\[\[(\d+)\]\]",
        max_score=5,
    )
    assert custom.parse("[[3]] then [[4]]") == (4.0, None)
    assert custom.parse("[[7]]") == (None, "out_of_range")
