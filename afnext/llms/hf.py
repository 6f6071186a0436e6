"""Any transformers ``AutoModelForCausalLM`` (Qwen2 / Qwen2.5 / Qwen3 / Llama, ...) as afnext's LLM.

Built from a local checkpoint folder or from a config dict (random init, for tiny models and ``meta``
builds); adds the audio and ChatML tokens to the tokenizer when missing and resizes the embeddings; LoRA
through peft; the attention implementation is transformers' own switch (``sdpa``, ``eager``,
``flex_attention``, or ``afnext_varlen`` once afnext's kernels are registered).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from afnext.errors import CheckpointError, ConfigError
from afnext.llms.tokenizer import (
    AUDIO_BOS_TOKEN,
    AUDIO_EOS_TOKEN,
    AUDIO_TOKEN,
    ENDOFTEXT,
    IM_END,
    TINY_TOKENIZER_DIR,
    ensure_audio_tokens,
)
from afnext.specs import TARGET, RecordsSpec, qualified_name
from afnext.transformers_compat import enable_checkpointing, prepare_attn_implementation

__all__ = ["TURN_ENDS", "HFCausalLM", "resolve_dtype"]

TURN_ENDS = (IM_END, "<|eot_id|>", "<end_of_turn>")
"""End-of-turn tokens of the chat formats afnext knows (ChatML, Llama 3, Gemma): generation stops at them."""


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype from its config name (``float32``, ``bfloat16``, ``float16``) or None."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in _DTYPES:
        raise ConfigError(f"llm.dtype={name!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


class HFCausalLM(nn.Module, metaclass=RecordsSpec):
    """A transformers causal LM plus its tokenizer.

    Args:
        path: Local checkpoint folder (``config.json`` + safetensors + tokenizer files).
        config: transformers config keys including ``model_type`` for a randomly initialised model
            (used when ``path`` is None).
        tokenizer: Tokenizer folder; default: ``path``, or afnext's bundled tiny tokenizer for ``config``.
        attn_implementation: ``sdpa``, ``eager``, ``flex_attention``, ``afnext_varlen``, ...
        dtype: ``float32``, ``bfloat16`` or ``float16`` (default: the checkpoint's, float32 for configs).
        lora: peft ``LoraConfig`` keys (``r``, ``lora_alpha``, ``target_modules``, ...) to add adapters.
        gradient_checkpointing: Enable transformers' activation checkpointing.
        trust_remote_code: Allow code shipped with a checkpoint to run (off unless asked).
        chat_template: The prompt format: None (the tokenizer's own template; ChatML when it has none),
            ``"chatml"`` (AF-Next's format whatever the tokenizer has), or a Jinja template.
    """

    def __init__(
        self,
        path: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        attn_implementation: str = "sdpa",
        dtype: str | torch.dtype | None = None,
        lora: dict[str, Any] | None = None,
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        chat_template: str | None = None,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        if (path is None) == (config is None):
            raise ConfigError(
                "llm: give exactly one of llm.path (a checkpoint folder) or llm.config"
            )
        torch_dtype = resolve_dtype(dtype)
        attn_implementation = prepare_attn_implementation(attn_implementation)
        if path is not None:
            if not Path(path, "config.json").is_file():
                raise CheckpointError(
                    f"llm.path={path}: not a transformers checkpoint folder (no config.json); "
                    "download the model first, afnext never fetches weights itself"
                )
            self.model = AutoModelForCausalLM.from_pretrained(
                path,
                attn_implementation=attn_implementation,
                dtype=torch_dtype,
                trust_remote_code=trust_remote_code,
            )
        else:
            cfg_kwargs = dict(config)
            if "model_type" not in cfg_kwargs:
                raise ConfigError("llm.config needs a model_type (qwen2, qwen3, llama, ...)")
            cfg = AutoConfig.for_model(cfg_kwargs.pop("model_type"), **cfg_kwargs)
            self.model = AutoModelForCausalLM.from_config(
                cfg, attn_implementation=attn_implementation, dtype=torch_dtype
            )
        tok_path = tokenizer or path or str(TINY_TOKENIZER_DIR)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                tok_path, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"llm.tokenizer={tok_path}: cannot load a tokenizer ({exc})"
            ) from exc
        self.path, self.tokenizer_path = path, tokenizer
        vocab = self.model.get_input_embeddings().num_embeddings
        on_meta = self.model.get_input_embeddings().weight.device.type == "meta"
        if tokenizer is None and path is None and not on_meta and vocab > 4 * len(self.tokenizer):
            # A full-size config with the bundled 1k-token tokenizer is a mistake, not a choice (a meta build
            # only counts parameters, so there it is fine).
            raise ConfigError(
                f"llm.config has vocab_size={vocab} but no llm.tokenizer was given, and afnext's bundled tiny "
                f"tokenizer has {len(self.tokenizer)} tokens; set llm.tokenizer=DIR (the model's tokenizer "
                f"folder), or llm.tokenizer={TINY_TOKENIZER_DIR} to use the tiny one on purpose"
            )
        ensure_audio_tokens(self.tokenizer, chat_template)
        if len(self.tokenizer) > self.model.get_input_embeddings().num_embeddings:
            # New special tokens: grow the embeddings (mean-initialised rows, transformers' default).
            self.model.resize_token_embeddings(len(self.tokenizer))
        self.lora_config = dict(lora) if lora else None
        if self.lora_config:
            self.add_lora(self.lora_config)
        self.attn_implementation = attn_implementation
        if gradient_checkpointing:
            self.enable_activation_checkpointing()

    def add_lora(self, lora: dict[str, Any]) -> None:
        """Wrap the LLM with peft LoRA adapters (``LoraConfig`` keys: ``r``, ``lora_alpha``, ...)."""
        from peft import LoraConfig, get_peft_model

        self.lora_config = dict(lora)

        cfg = {"task_type": "CAUSAL_LM", **self.lora_config}
        if "target_modules" in cfg and not isinstance(cfg["target_modules"], str):
            cfg["target_modules"] = list(cfg["target_modules"])
        self.model = get_peft_model(self.model, LoraConfig(**cfg))

    @property
    def has_lora(self) -> bool:
        """Whether LoRA adapters are attached."""
        return self.lora_config is not None

    @property
    def base(self) -> Any:
        """The transformers ``*ForCausalLM`` (under the peft wrapper when LoRA is on)."""
        return self.model.get_base_model() if self.has_lora else self.model

    @property
    def config(self) -> Any:
        """The transformers config of the LLM."""
        return self.base.config

    @property
    def hidden_size(self) -> int:
        """Width of the token embeddings (the connector's ``out_dim``)."""
        return int(self.base.get_input_embeddings().embedding_dim)

    def token_id(self, token: str) -> int:
        """Id of a token that must exist in the vocabulary."""
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise ConfigError(
                f"token {token!r} is not in the tokenizer {self.tokenizer.name_or_path}"
            )
        return int(tid)

    @property
    def special_ids(self) -> dict[str, int]:
        """Ids of the audio tokens and the turn terminator."""
        return {
            "audio": self.token_id(AUDIO_TOKEN),
            "audio_bos": self.token_id(AUDIO_BOS_TOKEN),
            "audio_eos": self.token_id(AUDIO_EOS_TOKEN),
        }

    def stop_token_ids(self) -> list[int]:
        """Tokens that end generation: the end of a turn in the chat format (``<|im_end|>``, Llama 3's
        ``<|eot_id|>``), the tokenizer's end of text, and the model's own ``generation_config`` ones."""
        vocab = self.tokenizer.get_vocab()
        ids = {
            vocab[t] for t in (*TURN_ENDS, ENDOFTEXT, self.tokenizer.eos_token) if t and t in vocab
        }
        eos = getattr(getattr(self.base, "generation_config", None), "eos_token_id", None)
        vocab_size = self.base.get_input_embeddings().num_embeddings
        ids.update(
            i for i in ([eos] if isinstance(eos, int) else list(eos or [])) if 0 <= i < vocab_size
        )
        return sorted(ids)

    def use_sequence_parallel_attention(self) -> None:
        """Run attention through :mod:`afnext.llms.sequence_parallel` (afnext's varlen attention, with Ulysses /
        Ring around it while a sequence-parallel forward is active). A runtime setting: checkpoints keep the
        configured back end."""
        from afnext.llms.sequence_parallel import register_sequence_parallel_attention

        self.base.set_attn_implementation(register_sequence_parallel_attention())

    def enable_activation_checkpointing(self) -> None:
        """Recompute each decoder layer's activations in the backward (transformers' checkpointing)."""
        enable_checkpointing(self.base)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, L) -> (B, L, hidden)``."""
        return self.base.get_input_embeddings()(input_ids)

    def checkpoint_spec(self) -> dict[str, Any]:
        """The spec a checkpoint keeps: this architecture from its config (not the folder it may have been read
        from; the checkpoint holds the weights and the tokenizer), with the vocabulary as resized and the
        adapters as added (see :mod:`afnext.specs`)."""
        cfg = self.config.to_dict()
        keep = {k: v for k, v in cfg.items() if k not in ("transformers_version", "architectures")}
        keep["vocab_size"] = self.base.get_input_embeddings().num_embeddings
        return {
            TARGET: qualified_name(type(self)),
            "config": keep,
            "attn_implementation": self.attn_implementation,
            "lora": self.lora_config,
        }

    @property
    def active_attn_implementation(self) -> str | None:
        """The attention back end the LLM runs with (transformers' resolved setting)."""
        return getattr(self.config, "_attn_implementation", None) or self.attn_implementation

    def output_weight(self) -> torch.Tensor:
        """The LM head's ``(vocab, hidden)`` weight, for a loss computed from hidden states.

        Raises:
            ConfigError: The head is not a plain bias-free linear map of the last hidden state (LoRA on
                ``lm_head``, a bias, logit scaling or soft-capping), so ``model.loss_impl=fused`` would compute
                another function; use ``model.loss_impl=naive`` for such a model.
        """
        head = self.base.get_output_embeddings()
        cfg = self.config
        reasons = []
        if head is None:
            reasons.append("it has no output embeddings")
        elif not isinstance(head, nn.Linear):  # peft's LoRA layer on lm_head is not an nn.Linear
            reasons.append(f"its lm_head is a {type(head).__name__} (LoRA on lm_head?)")
        elif head.bias is not None:
            reasons.append("its lm_head has a bias")
        for key in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
            if getattr(cfg, key, None) not in (None, 1, 1.0):
                reasons.append(f"its config sets {key}={getattr(cfg, key)}")
        if reasons:
            raise ConfigError(
                f"model.loss_impl=fused needs the LLM's logits to be lm_head(hidden), but {'; '.join(reasons)}; "
                "set model.loss_impl=naive (loss_impl='naive' in from_pretrained)"
            )
        return head.weight

    def hidden_states(self, **kwargs: Any) -> torch.Tensor:
        """Final hidden states ``(B, L, hidden)`` of the decoder (after its last norm), without the LM head.

        Args:
            **kwargs: As for :meth:`forward` (``inputs_embeds``, ``attention_mask``, ``position_ids``, ...),
                without ``labels``.
        """
        return self.base.get_decoder()(**kwargs).last_hidden_state

    def generate(self, **kwargs: Any) -> torch.Tensor:
        """transformers' ``generate`` (KV cache, sampling, penalties, ...) on the wrapped model."""
        return self.model.generate(**kwargs)

    def forward(self, **kwargs: Any) -> Any:
        """Call the transformers model (``inputs_embeds``, ``attention_mask``, ``labels``, cache, ...)."""
        return self.model(**kwargs)
