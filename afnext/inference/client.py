"""One client for OpenAI-compatible chat-completions endpoints (vLLM, SGLang, llama.cpp, TGI, hosted APIs).

The LLM judge (:mod:`afnext.evaluation.judge`) and the TACoT LLM teacher
(:mod:`afnext.reasoning.generators.chat`) share it, and the embedding matcher
(:mod:`afnext.evaluation.metrics.embedding_match`) uses its ``/embeddings`` side
(:meth:`OpenAICompatibleClient.embed_many`). What it adds over a bare POST:

* retries with exponential backoff and jitter on connection errors, timeouts, HTTP 429 and 5xx
  (``Retry-After`` is honoured); other 4xx fail at once with the status and the start of the body;
* a concurrency limit (one semaphore per client, shared by every call on it);
* an optional on-disk cache keyed by the request: ``sha256`` of the canonical JSON of the body (model
  included), written atomically, so a rerun asks the server only what it has not answered yet;
* :meth:`OpenAICompatibleClient.complete_many`: a batch sent concurrently from plain synchronous code,
  with one :class:`Result` per request; one failed request never loses the others.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from afnext.errors import ConfigError, DataError, UsageError

__all__ = [
    "OpenAICompatibleClient",
    "Result",
    "cache_key",
    "chat_endpoint",
    "embeddings_endpoint",
    "endpoint_settings",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """The outcome of one request of a batch.

    Attributes:
        text: The reply's ``choices[0].message.content``; ``None`` when the request failed.
        error: Why it failed (a :class:`~afnext.errors.DataError` naming the URL); ``None`` on success.
        reason: A short failure code for counting: ``timeout``, ``connection``, ``http_<status>`` or
            ``malformed_reply``; ``None`` on success.
        cached: The reply came from the on-disk cache (no request was sent).
        attempts: HTTP requests sent for it (0 for a cache hit).
    """

    text: str | None = None
    error: DataError | None = None
    reason: str | None = None
    cached: bool = False
    attempts: int = 0

    @property
    def ok(self) -> bool:
        """Whether the request succeeded."""
        return self.error is None


class _Failure(Exception):
    """Internal: one attempt failed; ``retry`` says whether another attempt may help."""

    def __init__(self, message: str, reason: str, retry: bool, wait: float | None = None) -> None:
        super().__init__(message)
        self.message, self.reason, self.retry, self.wait = message, reason, retry, wait


def chat_endpoint(base_url: str) -> str:
    """The chat-completions URL for a base URL (``http://host:port/v1``) or the full URL itself."""
    base = base_url.rstrip("/")
    return base if base.endswith("/chat/completions") else f"{base}/chat/completions"


def embeddings_endpoint(base_url: str) -> str:
    """The embeddings URL for a base URL (``http://host:port/v1``), its chat URL, or the full URL itself."""
    base = base_url.rstrip("/").removesuffix("/chat/completions")
    return base if base.endswith("/embeddings") else f"{base}/embeddings"


def endpoint_settings(
    config: Mapping[str, Any] | None, *, where: str, known: set[str], what: str
) -> dict[str, Any] | None:
    """The settings of a config block that names an endpoint (``base_url`` and ``model``), or ``None`` when it
    names none: null values are left out (the callee's defaults), except ``api_key_env: null`` (a server without
    keys).

    Args:
        config: The block (``judge``, ``benchmark.embedder``).
        where: Its config key, for messages.
        known: The keys it may hold.
        what: What it builds and what serves it, for the message when half of the pair is set (e.g. "an LLM
            judge needs" ... "(any OpenAI-compatible endpoint)").

    Raises:
        ConfigError: ``base_url`` without ``model`` or the reverse, or an unknown key (names ``where.key``).
    """
    if not config:
        return None
    values = {k: v for k, v in dict(config).items() if v is not None}
    if not values.get("base_url") and not values.get("model"):
        return None
    for key in ("base_url", "model"):
        if not values.get(key):
            raise ConfigError(
                f"{where}.{key} is not set: {what} {where}.base_url=http://HOST:PORT/v1 and {where}.model=NAME"
            )
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting; known: {sorted(known)}")
    if "api_key_env" in config and config["api_key_env"] is None:
        values["api_key_env"] = None  # a server without keys
    return values


def _chat_content(data: Any) -> str:
    """``choices[0].message.content`` of a chat-completions reply."""
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise _Failure(
            f"the reply has no choices[0].message.content string: {str(data)[:300]}",
            "malformed_reply",
            retry=False,
        )
    return content


def _embedding(data: Any) -> str:
    """The one vector of an embeddings reply (``data[0].embedding``), as JSON text (what the cache keeps)."""
    try:
        vector = data["data"][0]["embedding"]
    except (KeyError, IndexError, TypeError):
        vector = None
    if (
        not isinstance(vector, list)
        or not vector
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector)
    ):
        raise _Failure(
            f"the reply has no data[0].embedding list of numbers: {str(data)[:300]}",
            "malformed_reply",
            retry=False,
        )
    return json.dumps(vector)


def cache_key(body: Mapping[str, Any]) -> str:
    """``sha256`` of the canonical JSON of a request body (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAICompatibleClient:
    """A thread-safe client for one model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: ``http://host:port/v1`` or the full ``.../chat/completions`` URL.
        model: The model name the server expects (part of every request and of the cache key).
        api_key_env: Environment variable holding the API key (sent as a Bearer token); ``None`` for
            servers without keys. The key itself never goes into a config file.
        timeout: Seconds to wait for one reply (connect, send and read each).
        max_retries: Further attempts after a connection error, a timeout, HTTP 429 or 5xx.
        concurrency: Most requests in flight at once, across every call on this client.
        cache_dir: Folder of cached replies (created on first write); ``None`` turns the cache off. The
            cache returns the first reply for the same body, seed included, also when sampling.
        backoff: Seconds before the first retry; doubled each retry, with jitter (x0.5 to x1).
        max_backoff: Longest wait between attempts, ``Retry-After`` included.
        config_key: The config key this client is built from, named in error messages.

    Raises:
        ConfigError: A setting is out of range, or ``api_key_env`` names an unset variable.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 5,
        concurrency: int = 8,
        cache_dir: str | os.PathLike[str] | None = None,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        config_key: str = "client",
    ) -> None:
        if not str(base_url).startswith(("http://", "https://")):
            raise ConfigError(
                f"{config_key}.base_url {base_url!r} is not an http(s) URL; give e.g. "
                "http://127.0.0.1:8000/v1"
            )
        checks = {
            "timeout": (timeout, timeout > 0),
            "max_retries": (max_retries, max_retries >= 0),
            "concurrency": (concurrency, concurrency >= 1),
            "backoff": (backoff, backoff >= 0),
            "max_backoff": (max_backoff, max_backoff >= 0),
        }
        for key, (value, ok) in checks.items():
            if not ok:
                raise ConfigError(
                    f"{config_key}.{key}={value!r} is out of range: timeout and concurrency must be "
                    "positive, max_retries, backoff and max_backoff non-negative"
                )
        self.endpoint = chat_endpoint(base_url)
        self.embeddings = embeddings_endpoint(base_url)
        self.model, self.timeout, self.max_retries = model, float(timeout), int(max_retries)
        self.concurrency, self.backoff, self.max_backoff = int(concurrency), backoff, max_backoff
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        headers = {"Content-Type": "application/json"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(
                    f"{config_key}.api_key_env: environment variable {api_key_env} is not set; export "
                    "the key there, or set api_key_env to null for a server without keys"
                )
            headers["Authorization"] = f"Bearer {key}"
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout),
            limits=httpx.Limits(
                max_connections=self.concurrency, max_keepalive_connections=self.concurrency
            ),
        )

    def __enter__(self) -> OpenAICompatibleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def body(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> dict[str, Any]:
        """The JSON body of a request: ``model``, ``messages`` and the OpenAI parameters given."""
        return {"model": self.model, "messages": [dict(m) for m in messages], **params}

    def complete(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> str:
        """The assistant's reply to ``messages``.

        Args:
            messages: The conversation, OpenAI style (``[{"role": ..., "content": ...}]``).
            **params: Request parameters (``max_tokens``, ``temperature``, ``seed``, ...).

        Raises:
            DataError: The request failed after its retries, or the reply is malformed; the message
                names the URL.
        """
        result = self._run(self.body(messages, **params))
        if result.error is not None:
            raise result.error
        assert result.text is not None
        return result.text

    def complete_many(self, requests: Sequence[Mapping[str, Any]], **params: Any) -> list[Result]:
        """Send a batch concurrently (at most ``concurrency`` in flight); one result per request, in order.

        Args:
            requests: Each a mapping with ``messages`` and any per-request parameters, which override
                ``params``.
            **params: Parameters shared by every request (``max_tokens``, ``temperature``, ...).

        Returns:
            One :class:`Result` per request; a failed request is a result with ``error`` set.

        Raises:
            UsageError: A request has no ``messages``.
        """
        bodies = []
        for i, request in enumerate(requests):
            if "messages" not in request:
                raise UsageError(
                    f"complete_many: request {i} has no 'messages' (keys: {sorted(request)})"
                )
            bodies.append({"model": self.model, **params, **request})
        return self._run_all(bodies, self.endpoint, _chat_content)

    def embed_many(self, texts: Sequence[str], **params: Any) -> list[Result]:
        """Embed texts through the endpoint's ``/embeddings``, one request per text, concurrently; with the
        same retries, concurrency limit and cache as chat requests.

        Args:
            texts: The texts.
            **params: Parameters sent with each (e.g. ``dimensions``; vectors are read as JSON floats, so not
                ``encoding_format="base64"``).

        Returns:
            One :class:`Result` per text, in order; ``text`` holds the vector as JSON (a list of floats).
        """
        bodies = [{"model": self.model, **params, "input": str(text)} for text in texts]
        return self._run_all(bodies, self.embeddings, _embedding)

    def _run_all(self, bodies: list[dict[str, Any]], endpoint: str, extract: Any) -> list[Result]:
        """Send ``bodies`` concurrently (at most ``concurrency`` in flight); one result each, in order."""
        if len(bodies) <= 1:
            return [self._run(body, endpoint, extract) for body in bodies]
        pool = ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(bodies)), thread_name_prefix="afnext-client"
        )
        try:
            futures = [pool.submit(self._run, body, endpoint, extract) for body in bodies]
            return [future.result() for future in futures]
        finally:  # on Ctrl-C, drop the queued requests instead of sending them
            pool.shutdown(wait=False, cancel_futures=True)

    # -- one request ----------------------------------------------------------------------------

    def _run(
        self, body: dict[str, Any], endpoint: str | None = None, extract: Any = None
    ) -> Result:
        endpoint, extract = endpoint or self.endpoint, extract or _chat_content
        path = None
        if self.cache_dir is not None:
            key = cache_key(body)
            path = self.cache_dir / key[:2] / f"{key}.json"
            text = self._cache_read(path)
            if text is not None:
                return Result(text=text, cached=True)
        attempts = 0
        while True:
            attempts += 1
            try:
                with self._slots:
                    text = self._attempt(body, endpoint, extract)
            except _Failure as failure:
                if not failure.retry or attempts > self.max_retries:
                    tail = (
                        f" (gave up after {attempts} attempts; check the server, or raise "
                        "max_retries / timeout)"
                        if failure.retry
                        else ""
                    )
                    error = DataError(f"{endpoint}: {failure.message}{tail}")
                    return Result(error=error, reason=failure.reason, attempts=attempts)
                time.sleep(self._delay(attempts, failure.wait))
                continue
            if path is not None:
                try:
                    self._cache_write(path, body, text)
                except DataError as error:
                    return Result(error=error, reason="cache_write", attempts=attempts)
            return Result(text=text, attempts=attempts)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:  # the server said how long; jitter would only make it later
            return min(retry_after, self.max_backoff)
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)  # jitter spreads retries of a failed burst

    def _attempt(self, body: dict[str, Any], endpoint: str, extract: Any) -> str:
        try:
            reply = self._http.post(endpoint, json=body)
        except httpx.TimeoutException as exc:
            raise _Failure(
                f"no reply within timeout={self.timeout:g} s ({type(exc).__name__})",
                "timeout",
                retry=True,
            ) from exc
        except httpx.TransportError as exc:
            raise _Failure(
                f"cannot reach the {'chat' if endpoint == self.endpoint else 'embeddings'} server "
                f"({type(exc).__name__}: {exc}); is it running?",
                "connection",
                retry=True,
            ) from exc
        except httpx.RequestError as exc:
            # not a network fault (a bad content encoding, too many redirects): retrying won't help
            raise _Failure(
                f"request failed ({type(exc).__name__}: {exc})", "request_error", retry=False
            ) from exc
        status = reply.status_code
        if status >= 400:
            retry = status >= 500 or status == 429  # other 4xx: the request itself is wrong
            wait = _retry_after(reply.headers.get("Retry-After")) if retry else None
            raise _Failure(
                f"HTTP {status}: {reply.text[:300]}", f"http_{status}", retry=retry, wait=wait
            )
        try:
            data = reply.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Failure(
                f"the reply is not JSON ({exc}): {reply.text[:300]!r}",
                "malformed_reply",
                retry=False,
            ) from exc
        return extract(data)

    # -- cache ----------------------------------------------------------------------------------

    def _cache_read(self, path: Path) -> str | None:
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("%s: unreadable cache entry (%s); asking the server again", path, exc)
            return None
        text = entry.get("content") if isinstance(entry, dict) else None
        if not isinstance(text, str):
            log.warning("%s: cache entry without 'content'; asking the server again", path)
            return None
        return text

    def _cache_write(self, path: Path, body: Mapping[str, Any], text: str) -> None:
        from afnext.storage import atomic_write_text

        entry = json.dumps({"request": body, "content": text}, ensure_ascii=False)
        try:
            # a reader sees the old entry or the whole new one, never half
            atomic_write_text(path, entry)
        except OSError as exc:
            raise DataError(
                f"{path}: cannot write the reply cache ({exc}); free space in cache_dir "
                f"{self.cache_dir} or set cache_dir to null"
            ) from exc
