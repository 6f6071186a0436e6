"""LLM teacher end to end: a local OpenAI-style HTTP server, and a tiny transformers model on disk."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from afnext.errors import ConfigError, DataError
from afnext.reasoning.build import build_dataset
from afnext.reasoning.generators.chat import OpenAIChat, TransformersChat
from afnext.reasoning.generators.llm_teacher import LLMTeacherGenerator, render_timeline
from afnext.reasoning.sources import SyntheticSource
from afnext.reasoning.timeline import Event, Timeline
from tests.inference.fake_openai import FakeOpenAI, Reply

TIMELINE = Timeline(
    (
        Event(0.5, 1.25, "low tone"),
        Event(2.0, 4.5, "melody", kind="music"),
        Event(5.0, 6.0, "speech", kind="speech", speaker="Anna", text="open the door"),
    ),
    duration=7.0,
)
VALID = (
    "Question: Which comes first, the low tone or the melody?\n<think>\n"
    "The low tone plays at <t>0.5-1.25</t>.\nThe melody follows at <t>2-4.5</t>.\n"
    "</think>\nThe low tone."
)
INVALID = {
    "no_question": "<think>\nThe low tone plays at <t>0.5-1.25</t>.\n</think>\nThe low tone.",
    "format.unclosed_think": "Question: Which is first?\n<think>\nThe low tone at <t>0.5-1.25</t>.\nlow tone",
    "format.span_past_end": "Question: When?\n<think>\nThe speech at <t>5-9</t>.\n</think>\nAt 5 s.",
    "format.step_without_span": "Question: Who?\n<think>\nAnna speaks at <t>5-6</t>.\nSo it is Anna.\n</think>\nAnna",
    "ungrounded_span": "Question: What is at 3 s?\n<think>\nA dog barks at <t>6.2-6.9</t>.\n</think>\nA dog.",
}


def _queue(replies: list[str]) -> Callable[[dict], str]:
    """A fake-server responder answering from a queue, in arrival order."""
    replies = list(replies)
    return lambda body: replies.pop(0)


def test_http_teacher_keeps_valid_chains_and_counts_rejections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test")
    with FakeOpenAI(_queue([VALID, *INVALID.values(), VALID])) as server:
        client = OpenAIChat(url=server.url, model="teacher", api_key_env="TEST_TEACHER_KEY")
        generator = LLMTeacherGenerator(
            client, samples_per_timeline=len(INVALID) + 2, temperature=0.0
        )
        samples = generator.generate(TIMELINE, random.Random(0))
    assert len(samples) == 2
    assert samples[0].question == "Which comes first, the low tone or the melody?"
    assert samples[0].answer == "The low tone."
    assert [str(s) for s in samples[0].evidence] == [
        "Span(start=0.5, end=1.25)",
        "Span(start=2.0, end=4.5)",
    ]
    report = generator.report()["llm_teacher"]
    assert (report["requested"], report["accepted"], report["rejected"]) == (7, 2, 5)
    assert (report["failed"], report["failures"]) == (0, {})
    assert report["reasons"] == {reason: 1 for reason in INVALID}
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "teacher"
    assert render_timeline(TIMELINE) in request["body"]["messages"][1]["content"]
    assert "<t>5-6</t> Anna: open the door" in render_timeline(TIMELINE)


def test_http_errors_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    overloaded = Reply(status=503, raw=json.dumps({"error": {"message": "overloaded"}}))
    with FakeOpenAI(lambda body: overloaded) as server:
        url = server.url + "/chat/completions"
        client = OpenAIChat(url=url, model="m", api_key_env=None, max_retries=1, backoff=0.01)
        with pytest.raises(
            DataError, match=r"chat/completions: HTTP 503: .*overloaded.*2 attempts"
        ):
            client.complete(
                [{"role": "user", "content": "hi"}], max_new_tokens=5, temperature=0, seed=0
            )
        assert server.calls == 2  # 503 is retried now (max_retries=1)
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    keyed = OpenAIChat(url=server.url, model="m", api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(ConfigError, match="environment variable NO_SUCH_KEY_VAR is not set"):
        keyed.complete([{"role": "user", "content": "hi"}], max_new_tokens=5, temperature=0, seed=0)


def test_unreachable_server() -> None:
    client = OpenAIChat(
        url="http://127.0.0.1:9/v1", model="m", api_key_env=None, timeout=5, max_retries=0
    )
    with pytest.raises(DataError, match="cannot reach the chat server"):
        client.complete(
            [{"role": "user", "content": "hi"}], max_new_tokens=5, temperature=0, seed=0
        )


def test_teacher_in_a_build_reports_rejections(tmp_path: Path) -> None:
    # The server answers every scene with a chain citing spans no synthetic scene has: all rejected.
    reply = "Question: Is it?\n<think>\nA dog at <t>0.001-0.002</t>.\n</think>\nyes"
    with FakeOpenAI(lambda body: reply) as server:
        generator = LLMTeacherGenerator(OpenAIChat(url=server.url, model="m", api_key_env=None))
        source = SyntheticSource(num_scenes=4, seed=1, speech="off", max_duration=5)
        report = build_dataset(generator, source, str(tmp_path / "out"), seed=1)
    assert report.merged and sum(report.samples.values()) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["generator"]["llm_teacher"] == {
        "requested": 4,
        "accepted": 0,
        "rejected": 4,
        "failed": 0,
        "cached": 0,
        "reasons": {"ungrounded_span": 4},
        "failures": {},
    }
    assert summary["items_without_samples"] == 4


def _tiny_model(folder: Path, corpus: list[str]) -> None:
    """A byte-level BPE tokenizer and a 2-layer GPT-2, random weights, saved with save_pretrained."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        corpus, vocab_size=600, min_frequency=1, special_tokens=["<|endoftext|>"]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_tiny_random_transformers_teacher_is_rejected_and_counted(tmp_path: Path) -> None:
    generator = LLMTeacherGenerator(
        TransformersChat(str(tmp_path)),
        question_types=["counting"],
        max_new_tokens=24,
        temperature=0.0,
    )
    prompt = "".join(m["content"] for m in generator.messages(TIMELINE, "counting"))
    _tiny_model(tmp_path, [prompt, VALID])
    assert generator.generate(TIMELINE, random.Random(0)) == []
    report = generator.report()["llm_teacher"]
    assert (report["requested"], report["rejected"]) == (1, 1)
    assert "no_question" in report["reasons"] or "format.missing_think" in report["reasons"]


def _scripted_model(
    folder: Path, vocab_size: int, prompt_ids: list[int], reply_ids: list[int]
) -> None:
    """A 1-layer GPT-2 whose greedy continuation of ``prompt_ids`` is ``reply_ids``, saved to ``folder``.

    Every block weight is zero, so the last hidden state is ``wte[token] + wpe[position]``; ``wte`` is
    zero and ``wpe`` gives each reply position its own basis vector, which the (untied) ``lm_head`` maps
    to the token due there. Set by hand instead of trained: training even a tiny model to memorise the
    reply takes minutes of CPU on a busy 2-core machine.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    width = 128
    assert len(reply_ids) < width
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=len(prompt_ids) + 2 * width,
        n_embd=width,
        n_layer=1,
        n_head=2,
        tie_word_embeddings=False,
        eos_token_id=reply_ids[-1],
        bos_token_id=reply_ids[-1],
    )
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.transformer.ln_f.weight.fill_(1.0)
        for k, token in enumerate(reply_ids):  # position P-1+k predicts reply token k
            model.transformer.wpe.weight[len(prompt_ids) - 1 + k, k] = 1.0
            model.lm_head.weight[token, k] += 10.0
    model.save_pretrained(folder)


def test_tiny_transformers_teacher_passes_a_valid_chain(tmp_path: Path) -> None:
    """A tiny model that writes VALID for the prompt: its reply is kept (the accepting path through
    TransformersChat; the rejecting one is the random model above)."""
    from transformers import AutoTokenizer

    client = TransformersChat(str(tmp_path))
    generator = LLMTeacherGenerator(
        client, question_types=["counting"], max_new_tokens=100, temperature=0.0
    )
    messages = generator.messages(TIMELINE, "counting")
    _tiny_model(tmp_path, ["".join(m["content"] for m in messages), VALID])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    prompt_ids = tokenizer(client.prompt_text(messages))["input_ids"]
    reply_ids = tokenizer(VALID)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(reply_ids, skip_special_tokens=True) == VALID
    _scripted_model(tmp_path, len(tokenizer), prompt_ids, reply_ids)
    samples = generator.generate(TIMELINE, random.Random(0))
    report = generator.report()["llm_teacher"]
    assert (report["requested"], report["accepted"], report["rejected"]) == (1, 1, 0), report
    assert samples[0].question == "Which comes first, the low tone or the melody?"
    assert samples[0].think_text() == VALID.split("\n", 1)[1]
    assert samples[0].question_type == "counting"


def test_missing_model_folder_is_a_config_error(tmp_path: Path) -> None:
    client = TransformersChat(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="is not a folder"):
        client.complete([{"role": "user", "content": "x"}], max_new_tokens=2, temperature=0, seed=0)


_CITED = re.compile(r"^(<t>([0-9.]+)-([0-9.]+)</t>) (.+)$", re.MULTILINE)


def _grounded(body: dict) -> str | Reply:
    """A teacher that asks about the first event of the prompt's timeline: valid and grounded."""
    tag, start, _, label = _CITED.search(body["messages"][1]["content"]).groups()  # type: ignore[union-attr]
    return f"Question: When is the {label}?\n<think>\nThe {label} plays at {tag}.\n</think>\nAt {start} s."


def _split_lines(out: Path) -> list[str]:
    return sorted(
        line for split in ("train", "val", "test") for line in (out / f"{split}.jsonl").open()
    )


def test_build_sends_requests_concurrently(tmp_path: Path) -> None:
    """200 files against a server answering in 200 ms: about 2.5 s at concurrency 16 (40 s one by one)."""
    source = SyntheticSource(num_scenes=200, seed=2, speech="off", max_duration=5)
    with FakeOpenAI(_grounded, latency=0.2) as server:
        client = OpenAIChat(url=server.url, model="m", api_key_env=None, concurrency=16)
        generator = LLMTeacherGenerator(client, temperature=0.0)
        started = time.monotonic()
        report = build_dataset(generator, source, str(tmp_path / "out"), seed=2)
        elapsed = time.monotonic() - started
    assert elapsed < 15, f"200 items took {elapsed:.1f} s"
    assert server.calls == 200 and server.max_in_flight == 16
    assert sum(report.samples.values()) == 200
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["generator"]["llm_teacher"]["accepted"] == 200


def test_failed_item_is_counted_the_rest_written_and_a_rerun_resumes(tmp_path: Path) -> None:
    source = SyntheticSource(num_scenes=12, seed=3, speech="off", max_duration=5)
    doomed_id = source.ids()[5]
    doomed = render_timeline(source.load(doomed_id).timeline)

    def respond(body: dict) -> str | Reply:
        if doomed in body["messages"][1]["content"]:
            return Reply(status=500, raw='{"error": "this one always fails"}')
        return _grounded(body)

    def build() -> dict:
        client = OpenAIChat(
            url=server.url,
            model="m",
            api_key_env=None,
            max_retries=2,
            backoff=0.01,
            cache_dir=str(tmp_path / "cache"),
        )
        build_dataset(LLMTeacherGenerator(client), source, str(out), seed=3)
        return json.loads((out / "summary.json").read_text())

    out = tmp_path / "out"
    with FakeOpenAI(respond) as server:
        summary = build()
        teacher = summary["generator"]["llm_teacher"]
        assert (teacher["requested"], teacher["accepted"], teacher["failed"]) == (12, 11, 1)
        assert teacher["failures"] == {"http_500": 1}
        assert summary["items_without_samples"] == 1
        first = _split_lines(out)
        assert len(first) == 11 and not any(doomed_id in line for line in first)
        assert server.calls == 11 + 3  # the doomed item: 1 try + 2 retries
        # A build killed after its requests, before the shard was written: the rerun sends only the
        # request that never got an answer; the others come from the cache.
        for path in [*(out / "shards").iterdir(), out / "summary.json"]:
            path.unlink()
        teacher = build()["generator"]["llm_teacher"]
        assert server.calls == 14 + 3
        assert (teacher["cached"], teacher["accepted"], teacher["failed"]) == (11, 11, 1)
        assert _split_lines(out) == first


def test_a_batch_where_every_request_fails_stops_the_build(tmp_path: Path) -> None:
    source = SyntheticSource(num_scenes=4, seed=1, speech="off", max_duration=5)
    with FakeOpenAI(_grounded, fail_first=10**6) as server:
        client = OpenAIChat(url=server.url, model="m", api_key_env=None, max_retries=0)
        with pytest.raises(
            DataError, match=r"all 4 teacher requests of this batch failed.*HTTP 500"
        ):
            build_dataset(LLMTeacherGenerator(client), source, str(tmp_path / "out"), seed=1)
        assert not list((tmp_path / "out" / "shards").glob("*.jsonl"))  # nothing half-done kept
        server.fail_first = 0  # the server is back: the rerun builds the shard
        report = build_dataset(LLMTeacherGenerator(client), source, str(tmp_path / "out"), seed=1)
    assert report.shards_built == [0] and sum(report.samples.values()) == 4
