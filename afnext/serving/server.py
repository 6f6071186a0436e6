"""``afnext serve``: load a checkpoint and serve it on 127.0.0.1 with uvicorn; a server in a thread for tests
and benchmarks."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from afnext.errors import ConfigError

__all__ = ["ServerThread", "build_app", "serve", "serve_from_config"]


def serve(
    checkpoint: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve a model with the OpenAI chat-completions API until interrupted.

    Args:
        checkpoint: Run, stage or model folder (afnext or transformers AF3 / AF-Next).
        host: Address to bind (127.0.0.1: this machine only).
        port: TCP port.
        log_level: uvicorn's log level.
        **options: :func:`build_app`'s keyword arguments (model name, API key, audio folder, generation,
            batching, limits, device, dtype).

    Raises:
        ConfigError: See :func:`build_app`.
    """
    import uvicorn

    uvicorn.run(build_app(checkpoint, **options), host=host, port=port, log_level=log_level)


def serve_from_config(config: Mapping[str, Any]) -> None:
    """:func:`serve` with the settings of a composed ``conf/serve.yaml`` (as a plain dict)."""
    batching, limits = config["batching"], config["limits"]
    serve(
        config["checkpoint"],
        host=config["host"],
        port=int(config["port"]),
        model_name=config.get("model_name"),
        api_key_env=config.get("api_key_env"),
        audio_dir=config.get("audio_dir"),
        generation=config.get("generation"),
        max_batch_size=int(batching["max_batch_size"]),
        token_budget=int(batching["token_budget"]),
        batch_wait_ms=float(batching["wait_ms"]),
        max_body_mb=float(limits["max_body_mb"]),
        max_audio_seconds=limits.get("max_audio_seconds"),
        max_new_tokens=int(limits["max_new_tokens"]),
        device=config.get("device", "auto"),
        dtype=config.get("dtype"),
        log_level=config.get("log_level", "info"),
    )


def build_app(
    checkpoint: str | Path,
    *,
    model_name: str | None = None,
    api_key_env: str | None = None,
    audio_dir: str | Path | None = None,
    generation: Mapping[str, Any] | None = None,
    max_batch_size: int = 16,
    token_budget: int = 65536,
    batch_wait_ms: float = 10.0,
    max_body_mb: float = 100.0,
    max_audio_seconds: float | None = 1800.0,
    max_new_tokens: int = 4096,
    device: str = "auto",
    dtype: str | None = None,
) -> Any:
    """The app :func:`serve` runs.

    Args:
        checkpoint: Run, stage or model folder (afnext or transformers AF3 / AF-Next).
        model_name: Name clients pass as ``model`` (default: the checkpoint folder's name).
        api_key_env: Environment variable holding the API key clients must send as a Bearer token.
        audio_dir: Folder ``audio_url`` file parts may read from (``None``: only inline audio).
        generation: Default generation settings (a preset of ``conf/generation/``).
        max_batch_size: Most requests per ``generate`` call.
        token_budget: Most tokens per call (rows x (longest prompt + max_new_tokens)).
        batch_wait_ms: How long a request waits for others to share its batch.
        max_body_mb: Largest request body in MiB.
        max_audio_seconds: Longest audio a request may hold (``None``: no limit).
        max_new_tokens: Most ``max_tokens`` a request may ask for.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        dtype: Weights' dtype (``bfloat16``, ...; ``None``: as saved).

    Raises:
        ConfigError: ``api_key_env`` names an unset variable, or ``audio_dir`` is not a folder.
    """
    from afnext.inference.engine import load_engine
    from afnext.inference.generation import GenerationSettings
    from afnext.serving.app import create_app

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ConfigError(
                f"--api-key-env {api_key_env}: the variable is unset or empty; export {api_key_env}=<key> first"
            )
    if audio_dir is not None and not Path(audio_dir).is_dir():
        raise ConfigError(f"--audio-dir {audio_dir}: not a folder")
    settings = GenerationSettings.from_mapping(generation, where="generation")
    engine = load_engine(
        checkpoint,
        device=device,
        dtype=dtype,
        max_audio_seconds=max_audio_seconds,
        settings=settings,
        max_batch_size=max_batch_size,
        token_budget=token_budget,
    )
    return create_app(
        engine,
        model_name=model_name or Path(checkpoint).resolve().name,
        api_key=api_key,
        audio_dir=audio_dir,
        max_body_bytes=int(max_body_mb * 2**20),
        max_new_tokens=max_new_tokens,
        batch_wait_ms=batch_wait_ms,
    )


class ServerThread:
    """Run an app with uvicorn in a background thread (tests, benchmarks): ``with ServerThread(app) as s:``
    then ``s.base_url``.

    Args:
        app: The ASGI app.
        host: Address to bind.
        port: TCP port (0: a free one, read back after start).
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        )
        self.host = host
        self.port = port
        self.thread = threading.Thread(target=self.server.run, name="afnext-server", daemon=True)

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 60.0) -> ServerThread:
        """Start and wait until it accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Ask it to shut down and wait for it."""
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
