"""Multiple-choice answers matched to a choice by text-embedding similarity.

This is how NVIDIA's NeMo-Skills scores MMAU-Pro's closed questions (its NV-Embed judge): embed the model's output
and every choice, L2-normalise, take the choice with the highest dot product; the answer is right when that
choice equals the reference, compared stripped and lower-cased. NeMo-Skills runs ``nvidia/NV-Embed-v2`` in process
(``encode`` with an empty instruction, ``max_length`` 4096); here the embeddings come from any OpenAI-compatible
``/v1/embeddings`` endpoint (``infinity``, TEI, vLLM's pooling runner, a hosted API) through the shared client
(:class:`~afnext.inference.client.OpenAICompatibleClient`: retries, concurrency limit, on-disk cache), so the
7B embedding model can run in its own environment. How a server prepares the text for the model (prefixes, end
token, truncation) is the server's; compare its vectors with the model's own ``encode`` once before quoting
numbers as NeMo-Skills'.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["EmbeddingMatcher"]


class EmbeddingMatcher:
    """Picks, for each text, the most similar of its choices by embedding cosine similarity.

    Args:
        base_url: ``http://host:port/v1`` of an OpenAI-compatible server with ``/embeddings``.
        model: The embedding model's name there (``nvidia/NV-Embed-v2`` for NeMo-Skills' MMAU-Pro numbers).
        config_key: The config key this matcher is built from, named in error messages.
        **client: :class:`~afnext.inference.client.OpenAICompatibleClient` settings: ``api_key_env`` (here
            ``None`` unless given: a local server without keys), ``cache_dir`` (embeddings cached by model and
            text), ``concurrency``, ``max_retries``, ``timeout``, ``backoff``.

    Attributes:
        failures: Texts whose embedding could not be had, by reason (``timeout``, ``http_500``, ...).

    Raises:
        ConfigError: A setting is invalid, or ``api_key_env`` names an unset variable.
    """

    def __init__(
        self, base_url: str, model: str, *, config_key: str = "embedder", **client: Any
    ) -> None:
        from afnext.inference.client import OpenAICompatibleClient

        self.model = model
        client.setdefault("api_key_env", None)
        self.client = OpenAICompatibleClient(base_url, model, config_key=config_key, **client)
        self.failures: Counter[str] = Counter()

    def close(self) -> None:
        """Close the connections."""
        self.client.close()

    def vectors(self, texts: Sequence[str]) -> dict[str, np.ndarray | None]:
        """Unit-length embeddings of the distinct ``texts`` (``None`` where the request failed, counted in
        :attr:`failures`; also for an all-zero vector, which has no direction)."""
        distinct = list(dict.fromkeys(texts))
        out: dict[str, np.ndarray | None] = {}
        for text, result in zip(distinct, self.client.embed_many(distinct)):
            if result.text is None:
                self.failures[result.reason or "error"] += 1
                out[text] = None
                continue
            vector = np.asarray(json.loads(result.text), dtype=np.float64)
            norm = float(np.linalg.norm(vector))
            if norm == 0.0:
                self.failures["zero_vector"] += 1
                out[text] = None
                continue
            out[text] = vector / norm
        return out

    def match(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[int | None]:
        """For each ``(text, choices)``, the index of the choice most similar to ``text`` (the first on a tie);
        ``None`` when an embedding is missing (see :attr:`failures`) or there is no choice.

        Raises:
            DataError: Vectors of different lengths (the server mixed models).
        """
        from afnext.errors import DataError

        table = self.vectors([t for text, choices in pairs for t in (text, *choices)])
        out: list[int | None] = []
        for text, choices in pairs:
            query, options = table.get(text), [table.get(c) for c in choices]
            if query is None or not options or any(v is None for v in options):
                out.append(None)
                continue
            if any(v.shape != query.shape for v in options):  # type: ignore[union-attr]
                raise DataError(
                    f"embedder {self.model}: vectors of different lengths; one model must embed every text"
                )
            out.append(int(np.argmax(np.stack(options) @ query)))  # argmax: the first on a tie
        return out


def build_matcher(config: Any, *, where: str) -> EmbeddingMatcher | None:
    """An :class:`EmbeddingMatcher` from a config mapping (``base_url``, ``model``, ...), ``None`` without one.

    Raises:
        ConfigError: ``base_url`` without ``model`` or the reverse, or an unknown key (names ``where.key``).
    """
    from afnext.inference.client import endpoint_settings

    known = {
        "base_url", "model", "api_key_env", "cache_dir", "concurrency", "max_retries", "timeout", "backoff",
    }  # fmt: skip
    what = "an embedding matcher (an OpenAI-compatible /embeddings server) needs"
    values = endpoint_settings(config, where=where, known=known, what=what)
    return None if values is None else EmbeddingMatcher(**values, config_key=where)
