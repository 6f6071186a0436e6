"""The OpenAI-compatible HTTP app (FastAPI) over the inference engine.

Routes: ``POST /v1/chat/completions`` (streamed as server-sent events in OpenAI's chunk format, ending with
``data: [DONE]``, or not), ``GET /v1/models``, ``GET /health`` (no key needed; also the batcher's counts).

A request is read with a size limit, checked (:mod:`afnext.serving.protocol`), then prepared (base64 and audio
decoded, features, prompt ids) in a small thread pool: bad base64, audio that does not decode, audio over the
length limit or a malformed request answer 4xx in OpenAI's error shape, and the server goes on serving. Prepared
requests go to the :class:`~afnext.serving.batcher.DynamicBatcher`, whose one worker thread runs the model, so
the event loop stays responsive.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from afnext.errors import AfnextError
from afnext.inference.engine import InferenceEngine
from afnext.inference.generation import GenerationSettings
from afnext.serving.batcher import DynamicBatcher
from afnext.serving.protocol import (
    ChatRequest,
    chunk,
    completion,
    error_body,
    new_id,
    parse_chat_request,
)

__all__ = ["create_app"]


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def create_app(
    engine: InferenceEngine,
    *,
    model_name: str,
    settings: GenerationSettings | None = None,
    api_key: str | None = None,
    audio_dir: str | Path | None = None,
    max_body_bytes: int = 100 * 2**20,
    max_new_tokens: int = 4096,
    batch_wait_ms: float = 10.0,
    prepare_threads: int = 4,
) -> Any:
    """Build the FastAPI app.

    Args:
        engine: The inference engine (its processor's ``max_seconds`` is the audio length limit; its
            ``max_batch_size`` caps a batch).
        model_name: The name ``/v1/models`` lists and requests must give as ``model``.
        settings: Generation settings of requests that do not set them (default: the engine's).
        api_key: When set, every ``/v1`` request must send ``Authorization: Bearer <api_key>``.
        audio_dir: The folder ``audio_url`` file parts may read from (``None``: such parts are refused).
        max_body_bytes: Largest request body (413 above it).
        max_new_tokens: Most ``max_tokens`` a request may ask for.
        batch_wait_ms: How long a request waits for others to share its batch.
        prepare_threads: Threads decoding audio beside the model's worker.
    """
    default = settings or engine.settings
    folder = Path(audio_dir).resolve() if audio_dir is not None else None
    batcher = DynamicBatcher(engine, wait_ms=batch_wait_ms)
    pool = ThreadPoolExecutor(max_workers=prepare_threads, thread_name_prefix="afnext-prepare")

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()
            pool.shutdown(wait=False)

    app = FastAPI(title="afnext", lifespan=lifespan)
    app.state.batcher = batcher

    def error(status: int, message: str, code: str | None = None) -> JSONResponse:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse(error_body(message, kind=kind, code=code), status_code=status)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, f"malformed request: {exc.errors()}")

    def unauthorized(request: Request) -> JSONResponse | None:
        if api_key is None:
            return None
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if hmac.compare_digest(token.encode(), api_key.encode()):
            return None
        return error(
            401, "missing or wrong API key: send 'Authorization: Bearer <key>'", "invalid_api_key"
        )

    async def read_body(request: Request) -> bytes | JSONResponse:
        too_big = error(
            413, f"the request body is over the server's limit of {max_body_bytes} bytes"
        )
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_body_bytes:
            return too_big
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > max_body_bytes:
                return too_big
        return bytes(body)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, **batcher.info()}

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        if (denied := unauthorized(request)) is not None:
            return denied
        card = {
            "id": model_name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "afnext",
        }
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        if (denied := unauthorized(request)) is not None:
            return denied
        body = await read_body(request)
        if not isinstance(body, bytes):
            return body
        try:
            payload = json.loads(body)
        except UnicodeDecodeError as exc:
            return error(
                400, f"the request body is not UTF-8 text ({exc.reason} at byte {exc.start})"
            )
        except json.JSONDecodeError as exc:
            return error(400, f"the request body is not valid JSON ({exc})")
        try:
            parsed: ChatRequest = parse_chat_request(
                payload, default=default, max_new_tokens=max_new_tokens, audio_dir=folder
            )
        except AfnextError as exc:
            return error(400, str(exc))
        if parsed.model != model_name:
            return error(
                404,
                f"model {parsed.model!r} is not served here; use {model_name!r}",
                "model_not_found",
            )
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(pool, engine.prepare, parsed.request)
        if prepared.error is not None:
            return error(400, _unusable(prepared))
        ident = new_id()
        if not parsed.stream:
            try:
                result = await asyncio.wrap_future(batcher.submit(prepared))
            except Exception as exc:  # reported to the client, the server goes on
                return error(500, f"generation failed: {exc}")
            if result.error is not None:
                return error(500, result.error)
            return completion(ident, model_name, result)

        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def listener(piece: str) -> None:  # called on the worker thread
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        future = asyncio.wrap_future(batcher.submit(prepared, listener))
        future.add_done_callback(lambda _: pieces.put_nowait(None))

        async def events() -> AsyncIterator[bytes]:
            yield _sse(chunk(ident, model_name, {"role": "assistant", "content": ""}))
            while (piece := await pieces.get()) is not None:
                yield _sse(chunk(ident, model_name, {"content": piece}))
            try:
                result = await future
            except Exception as exc:  # reported to the client, the server goes on
                yield _sse(error_body(f"generation failed: {exc}", kind="server_error"))
                yield b"data: [DONE]\n\n"
                return
            if result.error is not None:
                yield _sse(error_body(result.error, kind="server_error"))
            else:
                yield _sse(chunk(ident, model_name, {}, finish_reason=result.finish_reason))
                if parsed.include_usage:
                    yield _sse(chunk(ident, model_name, None, usage=result))
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _unusable(prepared: Any) -> str:
    """A 400's message for a request whose audio or messages cannot be used: what is wrong, with the advice a
    client can act on (an audio error's training advice, such as a manifest or a config key, left out)."""
    from afnext.errors import AudioError, AudioTooLongError

    exc = prepared.exception
    if not isinstance(exc, AudioError):
        return f"the request's audio or messages cannot be used: {prepared.error}"
    where = f"{exc.source}: " if exc.source else ""
    if isinstance(exc, AudioTooLongError):
        advice = (
            f"This server takes audio up to {exc.max_seconds:g} s per file; send a shorter clip."
        )
    else:
        advice = "Send a whole, valid wav / mp3 / flac / ogg file (base64 in input_audio.data)."
    return f"the request's audio cannot be used: {where}{exc.problem} {advice}"
