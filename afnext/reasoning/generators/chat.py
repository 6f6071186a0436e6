"""Chat models the LLM-teacher generator can prompt: a local ``transformers`` causal LM, or any
OpenAI-compatible HTTP endpoint (vLLM, llama.cpp server, TGI, hosted APIs).

A batch of prompts goes through :func:`complete_all`: a client with a ``complete_many`` method
(:class:`OpenAIChat`: concurrent requests, retries, an on-disk cache) gets the whole batch; any other
:class:`ChatClient` is asked one prompt at a time. Either way a failed prompt is a per-item
:class:`~afnext.inference.client.Result` with its error, never the end of the batch.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from afnext.errors import ConfigError, DataError

if TYPE_CHECKING:
    from afnext.inference.client import OpenAICompatibleClient, Result

__all__ = ["ChatClient", "ChatRequest", "OpenAIChat", "TransformersChat", "complete_all"]

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@runtime_checkable
class ChatClient(Protocol):
    """One chat completion at a time."""

    def complete(
        self, messages: list[Message], *, max_new_tokens: int, temperature: float, seed: int
    ) -> str:
        """The assistant's reply to ``messages``.

        Args:
            messages: The conversation, OpenAI style.
            max_new_tokens: Most tokens to generate.
            temperature: 0 decodes greedily; above 0 samples.
            seed: Seed for sampling, so a build is repeatable where the backend allows.
        """
        ...


@dataclass(frozen=True)
class ChatRequest:
    """One prompt of a batch, with the arguments of :meth:`ChatClient.complete`."""

    messages: list[Message]
    max_new_tokens: int
    temperature: float
    seed: int


def complete_all(client: ChatClient, requests: Sequence[ChatRequest]) -> list[Result]:
    """Replies to a batch, one :class:`~afnext.inference.client.Result` per request, in order.

    A client with ``complete_many`` (:class:`OpenAIChat`) gets the batch at once (it sends it
    concurrently); any other client is asked one request at a time. A :class:`~afnext.errors.DataError`
    from one request is that request's result; a :class:`~afnext.errors.ConfigError` (a missing key or
    model folder) still ends the batch, since no request could succeed.
    """
    from afnext.inference.client import Result

    many = getattr(client, "complete_many", None)
    if callable(many):
        return many(requests)
    results = []
    for request in requests:
        try:
            text = client.complete(
                request.messages,
                max_new_tokens=request.max_new_tokens,
                temperature=request.temperature,
                seed=request.seed,
            )
        except DataError as error:
            results.append(Result(error=error, reason=type(error).__name__, attempts=1))
        else:
            results.append(Result(text=text, attempts=1))
    return results


@dataclass
class TransformersChat:
    """A local Hugging Face causal LM, loaded from a folder on first use (never downloaded).

    Args:
        model_path: Folder with the model and tokenizer (``save_pretrained`` output).
        device: Torch device.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        trust_remote_code: Allow model code shipped in the folder (off unless asked; see DESIGN).
    """

    model_path: str
    device: str = "cpu"
    dtype: str = "float32"
    trust_remote_code: bool = False
    _tokenizer: Any = field(default=None, init=False, repr=False)
    _loaded: tuple[Any, Any] | None = field(default=None, init=False, repr=False)

    def _check_folder(self) -> None:
        if not Path(self.model_path).is_dir():
            raise ConfigError(
                f"generator.client.model_path {self.model_path!r} is not a folder; give a local "
                "folder written by save_pretrained (models are never downloaded here)"
            )

    def tokenizer(self) -> Any:
        """The tokenizer, loaded on first use (without the model)."""
        if self._tokenizer is None:
            self._check_folder()
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(
                self.model_path, trust_remote_code=self.trust_remote_code, local_files_only=True
            )
        return self._tokenizer

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self._check_folder()
            import torch
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(
                self.model_path,
                dtype=getattr(torch, self.dtype),
                trust_remote_code=self.trust_remote_code,
                local_files_only=True,
            ).to(self.device)
            model.eval()
            self._loaded = (self.tokenizer(), model)
        return self._loaded

    def prompt_text(self, messages: list[Message]) -> str:
        """The text the model is prompted with: the tokenizer's chat template when it has one, else a
        plain ``### Role:`` layout ending with ``### Assistant:\\n``."""
        tokenizer = self.tokenizer()
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        turns = [f"### {m['role'].capitalize()}:\n{m['content']}\n" for m in messages]
        return "".join(turns) + "### Assistant:\n"

    def complete(
        self, messages: list[Message], *, max_new_tokens: int, temperature: float, seed: int
    ) -> str:
        import torch

        tokenizer, model = self._load()
        inputs = tokenizer(self.prompt_text(messages), return_tensors="pt").to(self.device)
        options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0}
        if temperature > 0:
            options["temperature"] = temperature
            torch.manual_seed(seed)
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        with torch.no_grad():
            out = model.generate(**inputs, **options, pad_token_id=pad)
        new = out[0, inputs["input_ids"].shape[1] :]  # (T_new,)
        return tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)


@dataclass
class OpenAIChat:
    """An OpenAI-compatible chat-completions endpoint, through the shared
    :class:`~afnext.inference.client.OpenAICompatibleClient` (built on first use).

    Args:
        url: Base URL (``http://127.0.0.1:8000/v1``) or the full ``.../chat/completions`` URL.
        model: The model name the server expects.
        api_key_env: Environment variable holding the API key (sent as a Bearer token); ``None`` for
            servers without keys. The key itself never goes into a config file.
        timeout: Seconds to wait for one reply.
        concurrency: Most requests in flight at once.
        max_retries: Further attempts after a connection error, a timeout, HTTP 429 or 5xx.
        cache_dir: Folder of cached replies keyed by request (model, prompt, seed, ...): a rerun of a
            build asks only what was not answered yet. ``None``: no cache.
        backoff: Seconds before the first retry (doubled each retry, with jitter).

    The last four leave the replies unchanged, so they are kept out of ``repr``: the dataset builder
    records the generator's ``repr`` and refuses to resume a build whose settings changed.
    """

    url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = 120.0
    concurrency: int = field(default=8, repr=False)
    max_retries: int = field(default=5, repr=False)
    cache_dir: str | None = field(default=None, repr=False)
    backoff: float = field(default=0.5, repr=False)
    _client: OpenAICompatibleClient | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def client(self) -> OpenAICompatibleClient:
        """The HTTP client, built on first use (so a config composes without the key set).

        Raises:
            ConfigError: ``api_key_env`` names an unset variable, or a setting is out of range.
        """
        with self._lock:
            if self._client is None:
                from afnext.inference.client import OpenAICompatibleClient

                self._client = OpenAICompatibleClient(
                    self.url,
                    self.model,
                    api_key_env=self.api_key_env,
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                    concurrency=self.concurrency,
                    cache_dir=self.cache_dir,
                    backoff=self.backoff,
                    config_key="generator.client",
                )
            return self._client

    @staticmethod
    def _params(max_new_tokens: int, temperature: float, seed: int) -> dict[str, Any]:
        return {"max_tokens": max_new_tokens, "temperature": temperature, "seed": seed}

    def complete(
        self, messages: list[Message], *, max_new_tokens: int, temperature: float, seed: int
    ) -> str:
        return self.client().complete(messages, **self._params(max_new_tokens, temperature, seed))

    def complete_many(self, requests: Sequence[ChatRequest]) -> list[Result]:
        """Send a batch concurrently (at most ``concurrency`` at once); one result per request.

        Raises:
            ConfigError: As :meth:`client`; failures of single requests are results, not raised.
        """
        bodies = [
            {
                "messages": r.messages,
                **self._params(r.max_new_tokens, r.temperature, r.seed),
            }
            for r in requests
        ]
        return self.client().complete_many(bodies)
