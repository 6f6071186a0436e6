"""``afnext serve`` with the official ``openai`` client: audio parts, dynamic batching equal to one-at-a-time
answers, streaming, 4xx on bad input (the server goes on), the API key, the command itself."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import soundfile

from afnext.inference.engine import Request, load_engine
from afnext.inference.generation import GenerationSettings
from tests.helpers import tone_mix
from tests.serving.conftest import SERVE


def _wav(seconds: float, seed: int = 0, fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, tone_mix(seconds, seed), 16000, format=fmt)
    return buffer.getvalue()


def _messages(audio: bytes, question: str, fmt: str = "wav") -> list[dict]:
    data = base64.b64encode(audio).decode()
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_audio", "input_audio": {"data": data, "format": fmt}},
                {"type": "text", "text": question},
            ],
        }
    ]


def _client(server, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)


def _ask(client: openai.OpenAI, messages: list[dict], **kwargs) -> str:
    reply = client.chat.completions.create(model="tiny", messages=messages, **kwargs)
    return reply.choices[0].message.content


def test_concurrent_requests_are_batched_and_equal_one_at_a_time(server, tiny_model_dir):
    clips = [(_wav(0.6 + 0.45 * i, seed=i), f"What happens in clip {i}?") for i in range(16)]
    client = _client(server)
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda c: _ask(client, _messages(*c)), clips))
    health = httpx.get(server.base_url.replace("/v1", "/health")).json()
    assert health["largest_batch"] > 1  # requests shared generate calls

    settings = GenerationSettings.from_mapping(SERVE["generation"])
    engine = load_engine(tiny_model_dir, device="cpu", settings=settings)
    alone = []
    for audio, question in clips:
        parts = [{"type": "audio", "audio": audio}, {"type": "text", "text": question}]
        alone.append(engine.generate([Request([{"role": "user", "content": parts}])])[0].text)
    assert together == alone and len(set(alone)) > 1


def test_streamed_chunks_join_to_the_full_answer(server):
    client = _client(server)
    messages = _messages(_wav(2.2, 5, "FLAC"), "Describe it.", "flac")
    full = _ask(client, messages, max_tokens=20)
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=messages,
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces) == full
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 20 and chunks[-1].usage.prompt_tokens > 0


def _bad_requests(audio_dir) -> dict[str, tuple[int, dict, str]]:
    good = base64.b64encode(_wav(1.0)).decode()
    text = base64.b64encode(b"just some text, not a wav file at all").decode()

    def part(data: str, fmt: str = "wav") -> dict:
        return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}

    def user(*parts: dict) -> dict:
        return {"messages": [{"role": "user", "content": list(parts)}]}

    outside = audio_dir.parent / "secret.wav"
    outside.write_bytes(_wav(0.5))
    return {
        "corrupt base64": (400, user(part("%%%not base64%%%")), "not valid base64"),
        "text posing as wav": (400, user(part(text)), "could not decode audio"),
        "over-long audio": (400, user(part(base64.b64encode(_wav(12.0)).decode())), "over the limit of 10 s"),
        "unknown format": (400, user(part(good, "aac")), "input_audio.format"),
        "two choices": (400, {**user(part(good)), "n": 2}, "only n=1"),
        "too many tokens": (400, {**user(part(good)), "max_tokens": 65}, "over this server's limit of 64"),
        "remote url": (400, user({"type": "audio_url", "audio_url": {"url": "https://x.org/a.wav"}}), "not fetched"),
        "outside audio dir": (400, user({"type": "audio_url", "audio_url": {"url": str(outside)}}), "outside"),
        "no messages": (400, {"messages": []}, "messages"),
        "unknown model": (404, {**user(part(good)), "model": "gpt-4o"}, "not served here"),
        "body over 1 MiB": (413, user(part(base64.b64encode(_wav(40.0)).decode())), "over the server's limit"),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [
        "corrupt base64", "text posing as wav", "over-long audio", "unknown format", "two choices",
        "too many tokens", "remote url", "outside audio dir", "no messages", "unknown model", "body over 1 MiB",
    ],
)  # fmt: skip
def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, audio_dir, case):
    status, body, words = _bad_requests(audio_dir)[case]
    client = _client(server)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**{"model": "tiny", **body})
    assert caught.value.status_code == status
    error = caught.value.body if isinstance(caught.value.body, dict) else {}
    assert words in error.get("message", str(caught.value))
    assert _ask(client, _messages(_wav(1.0), "Still there?"))  # the next request is answered


def test_raw_bodies_the_openai_client_would_not_send(server):
    """Non-finite numbers (JSON's NaN / Infinity, 1e400), a body that is not UTF-8, and audio errors that must
    speak to a client (no manifest or training config key): 400 with a message, and the server goes on."""
    url = f"{server.base_url}/chat/completions"
    messages = _messages(_wav(1.0), "What is heard?")
    import json as _json

    body = _json.dumps({"model": "tiny", "messages": messages})[:-1]
    for key, value in [("max_tokens", "1e400"), ("max_tokens", "NaN"), ("top_k", "Infinity"),
                       ("seed", "1e400"), ("temperature", "NaN")]:  # fmt: skip
        reply = httpx.post(url, content=f'{body}, "{key}": {value}}}', timeout=60)
        assert reply.status_code == 400, (key, value, reply.text)
        assert f"{key}: must be a finite number" in reply.json()["error"]["message"]
    reply = httpx.post(url, content=b'{"messages": "\xff\xfe"}', timeout=60)
    assert reply.status_code == 400 and "not UTF-8" in reply.json()["error"]["message"]

    empty = io.BytesIO()
    soundfile.write(empty, tone_mix(1.0, 0)[:0], 16000, format="WAV")
    for audio, words in [
        (empty.getvalue(), "holds no samples"),
        (_wav(12.0), "up to 10 s per file"),
    ]:
        payload = {"model": "tiny", "messages": _messages(audio, "What is heard?")}
        reply = httpx.post(url, json=payload, timeout=60)
        message = reply.json()["error"]["message"]
        assert reply.status_code == 400 and words in message, message
        assert "manifest" not in message and "max_audio_seconds" not in message

    # max_completion_tokens sent as null leaves max_tokens in force
    payload = {
        "model": "tiny",
        "messages": messages,
        "max_completion_tokens": None,
        "max_tokens": 3,
    }
    reply = httpx.post(url, json={**payload, "min_tokens": 3}, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] <= 3
    assert _ask(_client(server), messages)  # still serving


def test_malformed_json_and_unknown_routes_answer_in_openai_shape(server):
    reply = httpx.post(f"{server.base_url}/chat/completions", content=b"{not json")
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["error"]["message"]
    reply = httpx.get(f"{server.base_url}/nowhere")
    assert reply.status_code == 404 and reply.json()["error"]["type"] == "invalid_request_error"


def test_audio_url_reads_files_under_the_audio_dir(server, audio_dir):
    audio = _wav(1.3, 9)
    (audio_dir / "clip.wav").write_bytes(audio)
    client = _client(server)
    by_url = [{"role": "user", "content": [
        {"type": "audio_url", "audio_url": {"url": "clip.wav"}}, {"type": "text", "text": "What?"}]}]  # fmt: skip
    assert _ask(client, by_url) == _ask(client, _messages(audio, "What?"))
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_the_api_key_is_enforced(tiny_model_dir, monkeypatch):
    from afnext.errors import ConfigError
    from afnext.serving.server import ServerThread, build_app

    with pytest.raises(ConfigError, match="AFNEXT_TEST_KEY"):
        build_app(tiny_model_dir, api_key_env="AFNEXT_TEST_KEY", device="cpu")
    monkeypatch.setenv("AFNEXT_TEST_KEY", "s3cret")
    app = build_app(tiny_model_dir, api_key_env="AFNEXT_TEST_KEY", **SERVE)
    with ServerThread(app) as running:
        for key in ("wrong", ""):
            with pytest.raises(openai.AuthenticationError):
                _client(running, key or "x").models.list()
        assert httpx.post(f"{running.base_url}/chat/completions", json={}).status_code == 401
        assert _ask(_client(running, "s3cret"), _messages(_wav(1.0), "Hi?"))
        assert httpx.get(running.base_url.replace("/v1", "/health")).status_code == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_afnext_serve_command_serves_the_openai_api(tiny_model_dir):
    """The contract: `afnext serve --checkpoint RUN --port P` on 127.0.0.1:P, with the official client."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "afnext.cli", "serve", "--checkpoint", str(tiny_model_dir),
               "--port", str(port), "generation.max_new_tokens=8", "log_level=warning"]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="model", messages=_messages(_wav(1.0), "What is it?")
        )
        assert reply.choices[0].message.content and reply.usage.completion_tokens == 8
        stream = client.chat.completions.create(model="model", messages=_messages(_wav(1.0), "What is it?"), stream=True)  # fmt: skip
        assert (
            "".join(c.choices[0].delta.content or "" for c in stream)
            == reply.choices[0].message.content
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
