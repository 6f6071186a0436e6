"""LLM teacher end to end: a local OpenAI-style HTTP server, and a tiny transformers model on disk."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from afnext.errors import ConfigError, DataError
from afnext.reasoning.build import build_dataset
from afnext.reasoning.generators.chat import OpenAIChat, TransformersChat
from afnext.reasoning.generators.llm_teacher import LLMTeacherGenerator, render_timeline
from afnext.reasoning.sources import SyntheticSource
from afnext.reasoning.timeline import Event, Timeline

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


class _Server:
    """An OpenAI chat-completions server on 127.0.0.1 that replies from a queue and records requests."""

    def __init__(self, replies: list[str], status: int = 200) -> None:
        self.replies, self.status, self.requests = list(replies), status, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                )
                if outer.status != 200:
                    payload = json.dumps({"error": {"message": "overloaded"}}).encode()
                else:
                    content = outer.replies.pop(0)
                    choice = {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                    payload = json.dumps(
                        {"id": "x", "object": "chat.completion", "choices": [choice]}
                    ).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[_Server]:
    srv = _Server(*request.param)
    yield srv
    srv.close()


@pytest.mark.parametrize("server", [([VALID, *INVALID.values(), VALID],)], indirect=True)
def test_http_teacher_keeps_valid_chains_and_counts_rejections(
    server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_TEACHER_KEY", "sk-test")
    client = OpenAIChat(url=server.url, model="teacher", api_key_env="TEST_TEACHER_KEY")
    generator = LLMTeacherGenerator(client, samples_per_timeline=len(INVALID) + 2, temperature=0.0)
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
    assert report["reasons"] == {reason: 1 for reason in INVALID}
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "teacher"
    assert render_timeline(TIMELINE) in request["body"]["messages"][1]["content"]
    assert "<t>5-6</t> Anna: open the door" in render_timeline(TIMELINE)


@pytest.mark.parametrize("server", [([], 503)], indirect=True)
def test_http_errors_are_clear(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    client = OpenAIChat(url=server.url + "/chat/completions", model="m", api_key_env=None)
    with pytest.raises(DataError, match=r"chat/completions: HTTP 503: .*overloaded"):
        client.complete(
            [{"role": "user", "content": "hi"}], max_new_tokens=5, temperature=0, seed=0
        )
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    keyed = OpenAIChat(url=server.url, model="m", api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(ConfigError, match="environment variable NO_SUCH_KEY_VAR is not set"):
        keyed.complete([{"role": "user", "content": "hi"}], max_new_tokens=5, temperature=0, seed=0)


def test_unreachable_server() -> None:
    client = OpenAIChat(url="http://127.0.0.1:9/v1", model="m", api_key_env=None, timeout=5)
    with pytest.raises(DataError, match="cannot reach the chat server"):
        client.complete(
            [{"role": "user", "content": "hi"}], max_new_tokens=5, temperature=0, seed=0
        )


@pytest.mark.parametrize("server", [([],)], indirect=True)
def test_teacher_in_a_build_reports_rejections(server: _Server, tmp_path: Path) -> None:
    # The server answers every scene with a chain citing spans no synthetic scene has: all rejected.
    server.replies = ["Question: Is it?\n<think>\nA dog at <t>0.001-0.002</t>.\n</think>\nyes"] * 4
    generator = LLMTeacherGenerator(OpenAIChat(url=server.url, model="m", api_key_env=None))
    source = SyntheticSource(num_scenes=4, seed=1, speech="off", max_duration=5)
    report = build_dataset(generator, source, str(tmp_path / "out"), seed=1)
    assert report.merged and sum(report.samples.values()) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["generator"]["llm_teacher"] == {
        "requested": 4,
        "accepted": 0,
        "rejected": 4,
        "reasons": {"ungrounded_span": 4},
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
