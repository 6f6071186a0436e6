"""Chat models the LLM-teacher generator can prompt: a local ``transformers`` causal LM, or any
OpenAI-compatible HTTP endpoint (vLLM, llama.cpp server, TGI, hosted APIs).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from afnext.errors import ConfigError, DataError

__all__ = ["ChatClient", "OpenAIChat", "TransformersChat"]

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
    """An OpenAI-compatible chat-completions endpoint.

    Args:
        url: Base URL (``http://127.0.0.1:8000/v1``) or the full ``.../chat/completions`` URL.
        model: The model name the server expects.
        api_key_env: Environment variable holding the API key (sent as a Bearer token); ``None`` for
            servers without keys. The key itself never goes into a config file.
        timeout: Seconds to wait for one reply.
    """

    url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = 120.0

    def _endpoint(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else f"{base}/chat/completions"

    def complete(
        self, messages: list[Message], *, max_new_tokens: int, temperature: float, seed: int
    ) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ConfigError(
                    f"generator.client.api_key_env: environment variable {self.api_key_env} is not set; "
                    "export the key there, or set api_key_env=null for a server without keys"
                )
            headers["Authorization"] = f"Bearer {key}"
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        request = urllib.request.Request(
            self._endpoint(), data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                data = json.loads(reply.read().decode())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise DataError(f"{self._endpoint()}: HTTP {exc.code}: {detail}") from exc
        except urllib.error.URLError as exc:
            raise DataError(
                f"{self._endpoint()}: cannot reach the chat server ({exc.reason}); is it running?"
            ) from exc
        except json.JSONDecodeError as exc:
            raise DataError(f"{self._endpoint()}: the reply is not JSON: {exc}") from exc
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError) as exc:
            raise DataError(
                f"{self._endpoint()}: the reply has no choices[0].message.content: {str(data)[:300]}"
            ) from exc
