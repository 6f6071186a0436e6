"""OpenAI chat-completions requests -> engine requests, and the response / chunk / error JSON shapes.

Content parts (https://platform.openai.com/docs/api-reference/chat/create):

* ``{"type": "text", "text": "..."}``;
* ``{"type": "input_audio", "input_audio": {"data": "<base64>", "format": "wav" | "mp3" | "flac" | "ogg"}}``;
* ``{"type": "audio_url", "audio_url": {"url": ...}}`` (vLLM's part): a ``data:audio/...;base64,`` URL, or a
  file (``file://`` URL or path) under the server's ``--audio-dir``; anything else is refused.

Sampling: ``temperature`` 0 (or absent: the server's preset, greedy by default) decodes greedily, > 0 samples
with ``top_p`` (and ``top_k``); ``max_tokens`` / ``max_completion_tokens`` up to the server's limit;
``repetition_penalty``, ``top_k``, ``min_tokens`` and ``seed`` as in vLLM's extra parameters. Settings the engine cannot honour
(``n`` > 1, ``stop``, presence / frequency penalties, tools, logprobs) are refused with a message rather than
ignored. Every problem is an :class:`afnext.errors.InputError` naming the field (``messages[0].content[1]...``).
"""

from __future__ import annotations

import base64
import binascii
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from afnext.errors import InputError
from afnext.inference.engine import Request, Result
from afnext.inference.generation import GenerationSettings

__all__ = [
    "AUDIO_FORMATS",
    "ChatRequest",
    "chunk",
    "completion",
    "error_body",
    "parse_chat_request",
]

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_UNSUPPORTED = ("tools", "functions", "response_format", "logit_bias", "audio", "modalities")


@dataclass
class ChatRequest:
    """A parsed chat-completions request."""

    model: str
    request: Request
    stream: bool = False
    include_usage: bool = False


def error_body(
    message: str, *, kind: str = "invalid_request_error", code: str | None = None
) -> dict:
    """OpenAI's error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _decode_base64(data: Any, where: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise InputError(f"{where}: give the audio file as a non-empty base64 string")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(
            f"{where}: not valid base64 ({exc}); encode the file's bytes with base64"
        ) from exc


def _audio_from_url(url: Any, where: str, audio_dir: Path | None) -> bytes | str:
    if not isinstance(url, str) or not url:
        raise InputError(f"{where}: give a url string")
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise InputError(f"{where}: a data URL must be base64 (data:audio/wav;base64,...)")
        return _decode_base64(payload, where)
    scheme = urlparse(url).scheme
    if scheme not in ("", "file"):
        raise InputError(
            f"{where}: {scheme} URLs are not fetched; send the audio as input_audio (base64) or as a file "
            "under the server's --audio-dir"
        )
    if audio_dir is None:
        raise InputError(
            f"{where}: file audio_url parts are off on this server (start it with --audio-dir DIR); "
            "send the audio as input_audio (base64)"
        )
    path = Path(unquote(urlparse(url).path) if scheme == "file" else url)
    path = (path if path.is_absolute() else audio_dir / path).resolve()
    if not path.is_relative_to(audio_dir.resolve()):
        raise InputError(f"{where}: {url!r} is outside the server's --audio-dir")
    if not path.is_file():
        raise InputError(f"{where}: no file {url!r} under the server's --audio-dir")
    return str(path)


def _part(part: Any, where: str, audio_dir: Path | None) -> dict[str, Any]:
    if not isinstance(part, Mapping):
        raise InputError(f"{where}: a content part must be an object with a 'type'")
    kind = part.get("type")
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise InputError(f"{where}.text: must be a string")
        return {"type": "text", "text": part["text"]}
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, Mapping):
            raise InputError(f"{where}.input_audio: must be an object {{data, format}}")
        fmt = audio.get("format")
        if fmt not in AUDIO_FORMATS:
            raise InputError(
                f"{where}.input_audio.format: {fmt!r} is not supported; use one of {list(AUDIO_FORMATS)}"
            )
        return {
            "type": "audio",
            "audio": _decode_base64(audio.get("data"), f"{where}.input_audio.data"),
        }
    if kind == "audio_url":
        url = part.get("audio_url")
        url = url.get("url") if isinstance(url, Mapping) else url
        return {"type": "audio", "audio": _audio_from_url(url, f"{where}.audio_url.url", audio_dir)}
    raise InputError(f"{where}.type: {kind!r} is not supported; use text, input_audio or audio_url")


def _messages(raw: Any, audio_dir: Path | None) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise InputError("messages: give a non-empty list of messages")
    messages = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise InputError(f"{where}: must be an object with role and content")
        role = _ROLES.get(message.get("role"))
        if role is None:
            raise InputError(
                f"{where}.role: {message.get('role')!r}; use system, user or assistant"
            )
        content = message.get("content")
        if content is None:
            content = ""
        if isinstance(content, list):
            content = [_part(p, f"{where}.content[{k}]", audio_dir) for k, p in enumerate(content)]
            if role != "user" and any(p["type"] == "audio" for p in content):
                raise InputError(f"{where}: only user messages may hold audio")
        elif not isinstance(content, str):
            raise InputError(f"{where}.content: must be a string or a list of content parts")
        messages.append({"role": role, "content": content})
    return messages


def _number(body: Mapping[str, Any], key: str, kind: type, low: float, high: float) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN / Infinity, or 1e400
        raise InputError(f"{key}: must be a finite number, got {value!r}")
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and value != int(value))
    ):
        raise InputError(
            f"{key}: must be a {'whole number' if kind is int else 'number'}, got {value!r}"
        )
    if not low <= value <= high:
        raise InputError(f"{key}: {value} is out of range [{low:g}, {high:g}]")
    return kind(value)


def parse_chat_request(
    body: Any,
    *,
    default: GenerationSettings,
    max_new_tokens: int,
    audio_dir: Path | None = None,
) -> ChatRequest:
    """Check a chat-completions body and turn it into an engine request.

    Args:
        body: The decoded JSON body.
        default: The server's generation settings (a request's fields override them).
        max_new_tokens: The most ``max_tokens`` a request may ask for.
        audio_dir: The folder ``audio_url`` file parts may read from (``None``: such parts are refused).

    Raises:
        InputError: A malformed or unsupported request (the message names the field).
    """
    if not isinstance(body, Mapping):
        raise InputError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InputError("model: give the served model's name (GET /v1/models lists it)")
    for key in _UNSUPPORTED:
        if body.get(key):
            raise InputError(f"{key}: not supported by this server")
    if body.get("n") not in (None, 1):
        raise InputError("n: only n=1 is supported")
    if body.get("stop"):
        raise InputError(
            "stop: stop sequences are not supported; the model stops at the end of its turn"
        )
    if body.get("logprobs") or body.get("top_logprobs"):
        raise InputError("logprobs: not supported by this server")
    for key in ("presence_penalty", "frequency_penalty"):
        if _number(body, key, float, -2.0, 2.0):
            raise InputError(f"{key}: not supported; use repetition_penalty (e.g. 1.2)")
    # max_completion_tokens (the current name) wins over max_tokens (the older one) unless it is null
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    requested = body.get(key)
    if requested is not None:
        requested = _number(body, key, int, 1, float("inf"))
        if requested > max_new_tokens:
            raise InputError(f"{key}: {requested} is over this server's limit of {max_new_tokens}")
    temperature = _number(body, "temperature", float, 0.0, 2.0)
    sampling = default.do_sample if temperature is None else temperature > 0
    settings = default.replace(
        max_new_tokens=requested or min(default.max_new_tokens, max_new_tokens),
        do_sample=sampling,
        temperature=temperature if temperature else None,
        top_p=_number(body, "top_p", float, 1e-9, 1.0),
        top_k=_number(body, "top_k", int, 0, float("inf")),
        repetition_penalty=_number(body, "repetition_penalty", float, 1e-9, float("inf")),
        seed=_number(body, "seed", int, -(2**63), 2**63 - 1),
        min_new_tokens=_number(body, "min_tokens", int, 0, float("inf")),
    )
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise InputError("stream: must be true or false")
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, Mapping) and options.get("include_usage"))
    request = Request(_messages(body.get("messages"), audio_dir), settings=settings)
    return ChatRequest(model=model, request=request, stream=stream, include_usage=include_usage)


def new_id() -> str:
    """A completion id (``chatcmpl-...``)."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def _usage(result: Result) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def completion(ident: str, model: str, result: Result) -> dict[str, Any]:
    """A ``chat.completion`` object for a finished request."""
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage(result),
    }


def chunk(
    ident: str,
    model: str,
    delta: Mapping[str, Any] | None,
    *,
    finish_reason: str | None = None,
    usage: Result | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` (``delta`` None with ``usage``: the final usage-only chunk)."""
    body: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": dict(delta), "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = _usage(usage)
    return body
