"""A fake OpenAI-compatible chat-completions (and embeddings) server on 127.0.0.1 (a random port), for tests.

Switches: ``latency`` (seconds per reply), ``fail_first`` (HTTP 500 for the first N calls),
``rate_limit_first`` + ``retry_after`` (HTTP 429 with ``Retry-After``), ``hang_first`` (no reply for
``hang`` seconds: past any client timeout), ``malformed_first`` (a 200 whose body is not JSON), and
``respond(body) -> str | Reply`` for per-request behaviour; a body with ``input`` (``POST /v1/embeddings``) is
answered with ``embed(text)`` per input (default: :func:`bag_of_words`). It counts calls, records request bodies and
the most requests in flight at once.
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What to answer one request with: ``content`` in a normal completion, or ``raw`` as the body."""

    content: str = "ok"
    status: int = 200
    raw: str | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def echo(body: dict[str, Any]) -> str:
    """The default reply: the last message's content, prefixed with ``echo: ``."""
    return "echo: " + str(body["messages"][-1]["content"])


def bag_of_words(text: str, dims: int = 64) -> list[float]:
    """The default embedding: word counts hashed into ``dims`` buckets (texts sharing words point alike)."""
    vector = [0.0] * dims
    for word in re.findall(r"\w+", text.lower()):
        vector[zlib.crc32(word.encode()) % dims] += 1.0
    return vector


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default 5 drops connects of a concurrent burst (1 s SYN retries)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected here


class FakeOpenAI:
    """Start with ``with FakeOpenAI(...) as server:``; ``server.url`` ends in ``/v1``."""

    def __init__(
        self,
        respond: Callable[[dict[str, Any]], str | Reply] = echo,
        *,
        latency: float = 0.0,
        fail_first: int = 0,
        rate_limit_first: int = 0,
        retry_after: str = "1",
        hang_first: int = 0,
        hang: float = 30.0,
        malformed_first: int = 0,
        embed: Callable[[str], list[float]] = bag_of_words,
    ) -> None:
        self.respond, self.latency, self.embed = respond, latency, embed
        self.fail_first, self.rate_limit_first, self.retry_after = (
            fail_first,
            rate_limit_first,
            retry_after,
        )
        self.hang_first, self.hang, self.malformed_first = hang_first, hang, malformed_first
        self.calls = 0
        self.requests: list[dict[str, Any]] = []  # {"path", "auth", "body", "at"}
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # wakes hanging handlers
        self._httpd.shutdown()
        self._httpd.server_close()

    def bodies(self) -> list[dict[str, Any]]:
        """The request bodies received so far."""
        with self._lock:
            return [r["body"] for r in self.requests]

    def _decide(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.calls += 1
            n = self.calls
        if n <= self.fail_first:
            return Reply(status=500, raw='{"error": {"message": "internal error (fake)"}}')
        n -= self.fail_first
        if n <= self.rate_limit_first:
            return Reply(
                status=429,
                raw='{"error": {"message": "rate limited (fake)"}}',
                headers={"Retry-After": self.retry_after},
            )
        n -= self.rate_limit_first
        if n <= self.hang_first:
            return Reply(delay=self.hang)
        n -= self.hang_first
        if n <= self.malformed_first:
            return Reply(raw='{"choices": [ not json')
        if "input" in body and "messages" not in body:  # POST /v1/embeddings
            texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
            data = [
                {"object": "embedding", "index": i, "embedding": self.embed(text)}
                for i, text in enumerate(texts)
            ]
            return Reply(raw=json.dumps({"object": "list", "data": data, "model": body["model"]}))
        reply = self.respond(body)
        return reply if isinstance(reply, Reply) else Reply(content=reply)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    outer.requests.append(
                        {
                            "path": self.path,
                            "auth": self.headers.get("Authorization"),
                            "body": body,
                            "at": time.monotonic(),
                        }
                    )
                try:
                    reply = outer._decide(body)
                    stopped = outer._stop.wait(outer.latency + reply.delay)
                finally:  # out of flight before the reply can reach the client (no +1 overlap)
                    with outer._lock:
                        outer.in_flight -= 1
                if stopped:
                    return  # shutting down
                if reply.raw is not None:
                    payload = reply.raw.encode()
                else:
                    message = {"role": "assistant", "content": reply.content}
                    choice = {"index": 0, "message": message, "finish_reason": "stop"}
                    completion = {"id": "fake", "object": "chat.completion", "choices": [choice]}
                    payload = json.dumps(completion).encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

        return Handler
