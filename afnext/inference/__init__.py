"""afnext.inference: running and talking to models.

* :mod:`~afnext.inference.engine`: the one inference engine behind ``afnext eval``, ``chat`` and ``serve``
  (per-request preparation and errors, batches planned by length and token budget, left-padded KV-cached
  ``generate``, streaming);
* :mod:`~afnext.inference.requests`: a request, the request prepared, its result;
* :mod:`~afnext.inference.generation`: generation settings (presets in ``conf/generation/``) and the batch
  streamer;
* :mod:`~afnext.inference.export`: a folder transformers' and vLLM's AF3 / Music Flamingo classes load;
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
    "BatchStreamer": "generation",
    "GenerationSettings": "generation",
    "InferenceEngine": "engine",
    "Prepared": "requests",
    "Request": "requests",
    "Result": "client",
    "export_hf": "export",
    "load_engine": "engine",
    "OpenAICompatibleClient": "client",
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
