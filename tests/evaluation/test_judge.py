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


# --------------------------------------------------------------------------------------------------
# A benchmark's own prompt and scale; the judge block of conf/eval.yaml
# --------------------------------------------------------------------------------------------------
def _scale_of(body: dict) -> str:
    prompt = body["messages"][0]["content"]
    return "1-10" if "from 1 (wrong or unrelated) to 10" in prompt else "other"


def _long_audio_file(tmp_path: Path) -> Path:
    import json

    records = [
        {"id": f"l{k}", "sound": f"l{k}.wav", "question": "What is heard?", "answer": "A dog."}
        for k in range(3)
    ]
    (tmp_path / "longaudiobench.json").write_text(json.dumps(records))
    predictions = tmp_path / "run" / "p.jsonl"
    predictions.parent.mkdir()
    predictions.write_text(
        "".join(
            json.dumps({"id": f"l{k}", "prediction": p}) + "\n"
            for k, p in enumerate(["a dog barks", "a car", "a dog"])
        )
    )
    return predictions


def test_benchmark_prompt_and_scale_reach_the_judge(tmp_path: Path) -> None:
    """LongAudioBench asks 1-10 in its own prompt; a 0 is outside that scale: counted with its reason, not
    averaged in (a 0-10 prompt with a 1-10 scale used to drop every wrong answer and inflate the score)."""
    from afnext.evaluation.benchmarks import LongAudioBench, score_file

    replies = {"a dog barks": "Score: 9", "a car": "Score: 0", "a dog": "Score: 7"}

    def respond(body: dict) -> str:
        if _scale_of(body) != "1-10":
            return "Score: 5"
        prediction = body["messages"][0]["content"].split("Candidate answer: ")[1].split("\n")[0]
        return replies[prediction]

    predictions = _long_audio_file(tmp_path)
    with FakeOpenAI(respond) as server:
        judge = _judge(server.url)  # built with the generic 0-10 prompt
        result = score_file(LongAudioBench(root=tmp_path), predictions, judge=judge)
    assert result["score"] == pytest.approx(80.0)  # (9 + 7) / 2 / 10
    assert result["judge"]["judged"] == 2 and result["judge"]["failed"] == 1
    assert result["judge"]["failure_reasons"] == {"out_of_range": 1}
    assert judge.prompt == DEFAULT_JUDGE_PROMPT  # the run's judge is not changed


def test_build_judge_from_the_eval_config() -> None:
    from afnext.evaluation.judge import build_judge

    assert build_judge(None) is None
    assert build_judge({"base_url": None, "model": None, "api_key_env": "OPENAI_API_KEY"}) is None
    with pytest.raises(ConfigError, match=r"judge\.model is not set"):
        build_judge({"base_url": "http://127.0.0.1:9/v1", "model": None})
    with pytest.raises(ConfigError, match=r"judge\.temprature: unknown"):
        build_judge({"base_url": "http://x/v1", "model": "m", "temprature": 0})
    with pytest.raises(ConfigError, match="OPENAI_KEY_NOT_SET"):
        build_judge({"base_url": "http://x/v1", "model": "m", "api_key_env": "OPENAI_KEY_NOT_SET"})
    judge = build_judge(
        {"base_url": "http://x/v1", "model": "m", "api_key_env": None, "timeout": 5},
        cache_dir="/tmp/cache-here",
    )
    assert isinstance(judge, LLMJudge) and str(judge.client.cache_dir) == "/tmp/cache-here"
    # a plugin's judge: the LLM-judge keys it does not take are left out
    plugin = build_judge(
        {"_target_": "tests.evaluation.files.FakeJudge", "scores": [3], "model": "m", "timeout": 60}
    )
    assert plugin.score([{}]) == [3]


def test_eval_score_cli_uses_the_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`afnext eval score benchmark=longaudiobench ... judge.base_url=URL judge.model=M` as the issue writes it:
    the benchmark's prompt, a cache beside the predictions file (a rerun asks nothing)."""
    import json

    from afnext.cli import main

    predictions = _long_audio_file(tmp_path)
    with FakeOpenAI(lambda body: "Score: 8" if _scale_of(body) == "1-10" else "Score: 2") as server:
        argv = [
            "eval", "score", "benchmark=longaudiobench", f"benchmark.root={tmp_path}",
            f"predictions={predictions}", f"judge.base_url={server.url}", "judge.model=judge-model",
            "judge.api_key_env=null", "--json",
        ]  # fmt: skip
        assert main(argv) == 0
        first = json.loads(capsys.readouterr().out)
        assert server.calls == 3
        assert main(argv) == 0
        assert server.calls == 3  # cached
    assert first["score"] == pytest.approx(80.0) and first["judge"]["judged"] == 3
    assert (predictions.parent / "judge_cache").is_dir()


def test_a_verdict_judge_reads_its_last_judgement_line() -> None:
    """judge_verdict (NeMo-Skills' Yes / No judges): the text after the last marker decides; a reply without a
    verdict is counted as the rule's `otherwise` and named in the failure reasons, not dropped."""
    from afnext.evaluation.metrics.judged import judged_scores

    replies = {
        "a dog barks": "Reasoning: it matches.\nJudgement: Yes",
        "a cat": "Judgement: yes at first, but no.\nJudgement: No, it is a cat.",
        "a bark": "Reasoning: close enough.\nJudgement:   yes.",
        "nothing": "I would say yes.",  # no marker
        "bold": "Judgement: **Yes**",  # not a verdict word after the marker: counted No, as NeMo-Skills does
    }
    prompt = "Question: {question}\nReference: {expected_answer}\nResponse: {generation}\n"
    rule = {"marker": "Judgement:", "values": {"yes": 1, "no": 0}, "otherwise": 0}
    items = [
        {**item, "expected_answer": item["reference"], "generation": item["prediction"]}
        for item in _items(*replies)
    ]
    with FakeOpenAI(
        lambda body: replies[body["messages"][0]["content"].split("Response: ")[1].strip()]
    ) as server:
        result = judged_scores(_judge(server.url), items, scale=(0, 1), prompt=prompt, verdict=rule)
        sent = [b["messages"][0]["content"] for b in server.bodies()]  # sent concurrently
    assert result["per_item"] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert (
        result["score"] == pytest.approx(40.0) and result["judged"] == 5 and result["failed"] == 0
    )
    assert result["failure_reasons"] == {"no_verdict": 2}
    assert "Question: What is heard?\nReference: A dog barks.\nResponse: a dog barks\n" in sent

    # `otherwise: null` leaves a reply without a verdict out, as a failure
    with FakeOpenAI(lambda body: "no verdict here") as server:
        left_out = judged_scores(
            _judge(server.url), items[:2], scale=(0, 1), prompt=prompt,
            verdict={**rule, "otherwise": None},
        )  # fmt: skip
    assert left_out["failed"] == 2 and left_out["score"] is None

    with pytest.raises(ConfigError, match="judge_verdict"):
        _judge("http://127.0.0.1:9/v1").for_benchmark(verdict={"values": {"yes": 1}})

    class OldJudge:  # a plugin judge whose for_benchmark takes no verdict rule
        def for_benchmark(self, prompt, scale):
            return self

        def score(self, items):
            return [1.0] * len(items)

    from afnext.errors import UsageError

    with pytest.raises(UsageError, match="judge_verdict"):
        judged_scores(OldJudge(), items[:1], scale=(0, 1), prompt=prompt, verdict=rule)


def test_mmau_pro_nemo_skills_config_scores_open_answers_by_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`benchmark=mmau_pro_nemo_skills`: the Yes / No judge on open questions (share of Yes), NeMo-Skills'
    option format in prompts, and judge_prompt_file reading a NeMo-Skills-style YAML prompt config."""
    import json

    from hydra.utils import instantiate

    from afnext.cli import main
    from afnext.config import compose_config

    records = [
        {"id": f"o{k}", "audio_path": [f"data/o{k}.wav"], "question": f"Describe clip {k}.",
         "choices": [], "answer": "Rain.", "category": "open", "model_output": answer}
        for k, answer in enumerate(["Rain falling.", "A dog.", "Rain on a roof."])
    ] + [
        {"id": "c1", "audio_path": ["data/c1.wav"], "question": "Which?", "choices": ["Dog", "Cat"],
         "answer": "Dog", "category": "sound", "model_output": "B"},
    ]  # fmt: skip
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))

    def respond(body: dict) -> str:
        answer = body["messages"][0]["content"].split("Model response: ")[-1].split("\n")[0]
        return "Reasoning: ok.\nJudgement: Yes" if "Rain" in answer else "Judgement: No"

    def argv(url: str, *extra: str) -> list[str]:
        return ["eval", "score", "benchmark=mmau_pro_nemo_skills", f"predictions={path}",
                f"judge.base_url={url}", "judge.model=qwen", "judge.api_key_env=null", *extra, "--json"]  # fmt: skip

    with FakeOpenAI(respond) as server:
        assert main(argv(server.url)) == 0
        result = json.loads(capsys.readouterr().out)
        sent = "\n".join(b["messages"][0]["content"] for b in server.bodies())
    assert result["benchmark"] == "mmau_pro_nemo_skills"
    assert result["open"]["score"] == pytest.approx(100 * 2 / 3) and result["open"]["scale"] == [
        0,
        1,
    ]
    assert "Judgement: <Yes or No>" in sent and "Model response: Rain falling." in sent
    # closed questions prompted with `A. text` options after a blank line, as NeMo-Skills does
    cfg = compose_config("eval", ["benchmark=mmau_pro_nemo_skills", "benchmark.root=/x"])
    adapter = instantiate(cfg.benchmark, _convert_="all")
    item = adapter.items(records)[3]
    assert item.messages[-1]["content"] == "<sound>\nWhich?\n\nA. Dog\nB. Cat"

    prompt_file = tmp_path / "speechlm.yaml"
    prompt_file.write_text(
        "user: |-\n  Q: {question}\n  Ref: {expected_answer}\n  Model: {generation}\n  Judgement?\n"
    )
    with FakeOpenAI(lambda body: "Judgement: Yes") as server:
        assert main(argv(server.url, f"benchmark.judge_prompt_file={prompt_file}")) == 0
        capsys.readouterr()
        sent = [b["messages"][0]["content"] for b in server.bodies()]
    assert "Q: Describe clip 0.\nRef: Rain.\nModel: Rain falling.\nJudgement?" in sent


def test_judge_settings_are_checked_when_the_benchmark_is_built(tmp_path: Path) -> None:
    """A bad verdict rule, scale or prompt file fails when the config is instantiated, before any answer is
    generated; LongAudioBench takes the same settings as MMAU-Pro."""
    from afnext.evaluation.benchmarks import LongAudioBench, MMAUPro

    with pytest.raises(ConfigError, match="judge_verdict"):
        MMAUPro(judge_verdict={"values": {"yes": 1}})
    with pytest.raises(ConfigError, match="judge_scale"):
        LongAudioBench(judge_scale=(10, 1))
    with pytest.raises(ConfigError, match="no such file"):
        LongAudioBench(judge_prompt_file=str(tmp_path / "missing.yaml"))
    (tmp_path / "p.txt").write_text("Q {question} R {reference} P {prediction}")
    lab = LongAudioBench(judge_prompt_file=str(tmp_path / "p.txt"), judge_scale=(0, 1),
                         judge_verdict={"marker": "Verdict:", "values": {"yes": 1, "no": 0}})  # fmt: skip
    assert lab.judge_prompt.startswith("Q {question}") and lab.judge_verdict["marker"] == "Verdict:"
