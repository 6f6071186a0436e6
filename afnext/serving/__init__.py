"""afnext.serving: an OpenAI-compatible HTTP server on the inference engine (``afnext serve``).

* :mod:`~afnext.serving.protocol`: chat-completions requests -> engine requests; response, chunk, error JSON;
* :mod:`~afnext.serving.batcher`: dynamic batching on one worker thread;
* :mod:`~afnext.serving.app`: the FastAPI app;
* :mod:`~afnext.serving.server`: ``serve`` (uvicorn) and a server in a thread.

Names are imported on first use, so ``import afnext.serving`` pulls in neither FastAPI nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it
_EXPORTS = {
    "DynamicBatcher": "batcher",
    "ServerThread": "server",
    "build_app": "server",
    "create_app": "app",
    "parse_chat_request": "protocol",
    "serve": "server",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"afnext.serving.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'afnext.serving' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
