"""afnext.inference: talking to models.

* :mod:`~afnext.inference.client`: one client for OpenAI-compatible chat endpoints (retries with backoff,
  a concurrency limit, an on-disk cache, batches sent concurrently), shared by the LLM judge and the
  TACoT teacher.

Names are imported on first use, so ``import afnext.inference`` pulls in neither httpx nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module that defines it
_EXPORTS = {
    "OpenAICompatibleClient": "client",
    "Result": "client",
    "cache_key": "client",
    "chat_endpoint": "client",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"afnext.inference.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'afnext.inference' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
