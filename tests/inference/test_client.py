"""The OpenAI-compatible client against a local fake server: retries, errors, cache, concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from afnext.errors import ConfigError, DataError, UsageError
from afnext.inference.client import OpenAICompatibleClient, cache_key, chat_endpoint
from tests.inference.fake_openai import FakeOpenAI, Reply

HI = [{"role": "user", "content": "hi"}]


def _client(url: str, **options: object) -> OpenAICompatibleClient:
    options = {"api_key_env": None, "backoff": 0.01, "timeout": 5.0, **options}
    return OpenAICompatibleClient(url, "fake-model", **options)  # type: ignore[arg-type]


def test_reply_parsed_both_url_forms_and_key_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KEY_FOR_TEST", "sk-test")
    with FakeOpenAI() as server:
        for url in (server.url, server.url + "/chat/completions/"):
            with _client(url, api_key_env="FAKE_KEY_FOR_TEST") as client:
                assert client.complete(HI, max_tokens=5, temperature=0) == "echo: hi"
        assert [r["path"] for r in server.requests] == ["/v1/chat/completions"] * 2
        assert server.requests[0]["auth"] == "Bearer sk-test"
        assert server.requests[0]["body"] == {
            "model": "fake-model",
            "messages": HI,
            "max_tokens": 5,
            "temperature": 0,
        }


def test_missing_key_variable_and_bad_settings_are_config_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="environment variable NO_SUCH_KEY_VAR is not set"):
        OpenAICompatibleClient("http://127.0.0.1:1/v1", "m", api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(ConfigError, match=r"judge\.concurrency=0 is out of range"):
        OpenAICompatibleClient(
            "http://x/v1", "m", api_key_env=None, concurrency=0, config_key="judge"
        )
    with pytest.raises(ConfigError, match="not an http"):
        OpenAICompatibleClient("127.0.0.1:8000/v1", "m", api_key_env=None)
    assert chat_endpoint("http://h:1/v1/") == "http://h:1/v1/chat/completions"


def test_retry_after_500_succeeds() -> None:
    with FakeOpenAI(fail_first=2) as server, _client(server.url, max_retries=3) as client:
        assert client.complete(HI) == "echo: hi"
        assert server.calls == 3


def test_500_past_the_retries_names_url_status_and_attempts() -> None:
    with FakeOpenAI(fail_first=10) as server, _client(server.url, max_retries=2) as client:
        with pytest.raises(
            DataError, match=r"chat/completions: HTTP 500: .*internal error.*3 attempts"
        ):
            client.complete(HI)
        assert server.calls == 3


def test_400_fails_at_once_with_the_body() -> None:
    body = '{"error": "model fake-model does not exist"}' + "x" * 500
    with FakeOpenAI(lambda _: Reply(status=400, raw=body)) as server, _client(server.url) as client:
        with pytest.raises(DataError) as err:
            client.complete(HI)
        assert server.calls == 1
    message = str(err.value)
    assert "/v1/chat/completions: HTTP 400: " in message
    assert "model fake-model does not exist" in message
    assert "x" * 300 not in message  # the body is cut at 300 characters


def test_429_honours_retry_after() -> None:
    with FakeOpenAI(rate_limit_first=1, retry_after="1") as server, _client(server.url) as client:
        assert client.complete(HI) == "echo: hi"
        first, second = (r["at"] for r in server.requests)
    assert server.calls == 2
    assert second - first >= 0.9  # backoff alone would be 0.01 s


def test_timeout_is_retried_then_fails_clearly() -> None:
    with FakeOpenAI(hang_first=10, hang=30) as server:
        with _client(server.url, timeout=0.3, max_retries=2) as client:
            started = time.monotonic()
            with pytest.raises(DataError, match=r"no reply within timeout=0\.3 s.*3 attempts"):
                client.complete(HI)
            assert time.monotonic() - started < 5
        assert server.calls == 3


def test_unreachable_server_is_retried_then_clear() -> None:
    with _client("http://127.0.0.1:9/v1", max_retries=1) as client:
        result = client.complete_many([{"messages": HI}])[0]
    assert result.reason == "connection" and result.attempts == 2
    assert "cannot reach the chat server" in str(result.error)


def test_malformed_replies_are_per_item_errors() -> None:
    def respond(body: dict) -> Reply | str:
        text = body["messages"][0]["content"]
        return Reply(raw='{"choices": []}') if text == "no choices" else text.upper()

    requests = [{"messages": [{"role": "user", "content": c}]} for c in ("a", "no choices", "b")]
    # concurrency 1 sends in order, so the first call is the one answered with broken JSON
    with (
        FakeOpenAI(respond, malformed_first=1) as server,
        _client(server.url, concurrency=1) as client,
    ):
        results = client.complete_many(requests, temperature=0)
        assert server.calls == 3  # malformed replies are not retried
    assert [r.text for r in results] == [None, None, "B"]
    assert [r.reason for r in results] == ["malformed_reply", "malformed_reply", None]
    assert "the reply is not JSON" in str(results[0].error)
    assert "no choices[0].message.content" in str(results[1].error)


def test_batch_keeps_going_past_a_failed_item_and_keeps_order() -> None:
    def respond(body: dict) -> Reply | str:
        text = body["messages"][0]["content"]
        return Reply(status=422, raw="bad item") if text == "3" else f"<{text}>"

    requests = [{"messages": [{"role": "user", "content": str(i)}]} for i in range(8)]
    with FakeOpenAI(respond) as server, _client(server.url, concurrency=4) as client:
        results = client.complete_many(requests)
        with pytest.raises(UsageError, match="request 0 has no 'messages'"):
            client.complete_many([{"prompt": "x"}])
    assert [r.text for r in results] == [f"<{i}>" if i != 3 else None for i in range(8)]
    assert results[3].reason == "http_422" and "HTTP 422: bad item" in str(results[3].error)


def test_cache_hit_sends_no_request_and_corrupt_entry_is_rewritten(tmp_path: Path) -> None:
    with FakeOpenAI() as server:
        with _client(server.url, cache_dir=tmp_path) as client:
            assert client.complete(HI, temperature=0) == "echo: hi"
            assert client.complete(HI, temperature=0) == "echo: hi"
            assert server.calls == 1
            assert client.complete(HI, temperature=0.5) == "echo: hi"  # another body: a miss
            assert server.calls == 2
        key = cache_key({"model": "fake-model", "messages": HI, "temperature": 0})
        entry = tmp_path / key[:2] / f"{key}.json"
        assert json.loads(entry.read_text())["content"] == "echo: hi"
        entry.write_text('{"content": "echo: h')  # a torn write from an old crash
        with _client(server.url, cache_dir=tmp_path) as client:
            results = client.complete_many([{"messages": HI, "temperature": 0}] * 1)
            assert results[0].text == "echo: hi" and not results[0].cached
            assert server.calls == 3
            assert json.loads(entry.read_text())["content"] == "echo: hi"
            assert client.complete_many([{"messages": HI, "temperature": 0}])[0].cached
        assert server.calls == 3
    assert not list(tmp_path.rglob("*.partial"))


def test_concurrency_limit_is_respected() -> None:
    requests = [{"messages": [{"role": "user", "content": str(i)}]} for i in range(24)]
    with FakeOpenAI(latency=0.2) as server, _client(server.url, concurrency=6) as client:
        started = time.monotonic()
        results = client.complete_many(requests)
        elapsed = time.monotonic() - started
    assert all(r.ok for r in results)
    assert server.max_in_flight == 6
    assert 0.8 <= elapsed < 3.0  # 4 waves of 0.2 s; one at a time would be 4.8 s


def test_package_import_is_light() -> None:
    code = (
        "import sys, afnext.inference as m; "
        "assert 'httpx' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules); "
        "assert m.OpenAICompatibleClient.__name__ == 'OpenAICompatibleClient'; "
        "assert set(m.__all__) >= {'OpenAICompatibleClient', 'Result'}"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
