"""Self-supervised speech encoders from transformers (HuBERT, WavLM, wav2vec 2.0) on raw 16 kHz windows.

They prove the encoder interface is not Whisper-shaped: the input is the waveform of each 30 s window
(``features`` shaped ``(windows, 1, samples)``), the output runs at the conv stack's rate (50 Hz).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from afnext.audio.frontends import WaveformFrontEnd
from afnext.errors import CheckpointError, ConfigError, InputError
from afnext.specs import TARGET, RecordsSpec, qualified_name
from afnext.transformers_compat import enable_checkpointing, prepare_attn_implementation

__all__ = ["SSLSpeechEncoder"]

_SUPPORTED = ("hubert", "wavlm", "wav2vec2")


class SSLSpeechEncoder(nn.Module, metaclass=RecordsSpec):
    """A transformers HuBERT / WavLM / wav2vec 2.0 model used as an afnext audio encoder.

    Args:
        model_type: ``hubert``, ``wavlm`` or ``wav2vec2`` (ignored when ``path`` is given).
        config: Sizes for a randomly initialised model (transformers config keys).
        path: Local checkpoint folder to load instead (``config.json`` + weights).
        attn_implementation: transformers attention back end; ``None`` lets transformers pick (SDPA where
            the architecture supports it: HuBERT and wav2vec2 do, WavLM runs eager).
        sampling_rate: Input sample rate (16 kHz for all of these models).
    """

    window_seconds = 30.0

    def __init__(
        self,
        model_type: str = "hubert",
        config: dict[str, Any] | None = None,
        path: str | None = None,
        attn_implementation: str | None = None,
        sampling_rate: int = 16000,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        attn_implementation = prepare_attn_implementation(attn_implementation)
        if path is not None:
            if not Path(path, "config.json").is_file():
                raise CheckpointError(
                    f"{path}: not a transformers checkpoint folder (no config.json)"
                )
            self.model = AutoModel.from_pretrained(path, attn_implementation=attn_implementation)
        else:
            if model_type not in _SUPPORTED:
                raise ConfigError(
                    f"encoder.model_type={model_type!r} is not supported; use one of {_SUPPORTED}"
                )
            cfg = AutoConfig.for_model(model_type, **(config or {}))
            self.model = AutoModel.from_config(cfg, attn_implementation=attn_implementation)
        cfg = self.model.config
        if cfg.model_type not in _SUPPORTED:
            raise CheckpointError(
                f"{path}: model_type {cfg.model_type!r} is not one of {_SUPPORTED}"
            )
        self.out_dim = int(cfg.hidden_size)
        self.sampling_rate = sampling_rate
        self.front_end = WaveformFrontEnd(
            window_seconds=self.window_seconds, sampling_rate=sampling_rate
        )
        self.frame_rate = sampling_rate / math.prod(cfg.conv_stride)
        samples = int(self.window_seconds * sampling_rate)
        for kernel, stride in zip(
            cfg.conv_kernel, cfg.conv_stride
        ):  # python ints: works on meta too
            samples = (samples - kernel) // stride + 1
        self.tokens_per_window = samples
        # Models with group-norm feature extractors were trained without an attention mask: padding is
        # zeros they have seen (transformers' Wav2Vec2 docs); layer-norm ones need the mask.
        self._use_mask = getattr(cfg, "feat_extract_norm", "layer") == "layer"

    def checkpoint_spec(self) -> dict[str, Any]:
        """The spec a checkpoint keeps: this architecture from its config, without the folder it may have been
        read from (the checkpoint holds the weights; see :mod:`afnext.specs`)."""
        cfg = self.model.config.to_dict()
        return {
            TARGET: qualified_name(type(self)),
            "model_type": cfg["model_type"],
            "config": {
                k: v for k, v in cfg.items() if k not in ("model_type", "transformers_version")
            },
            "attn_implementation": self.model.config._attn_implementation,
            "sampling_rate": self.sampling_rate,
        }

    def enable_activation_checkpointing(self) -> None:
        """Recompute each encoder layer's activations in the backward."""
        enable_checkpointing(self.model)

    def output_lengths(self, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Tokens of each window from its valid samples (transformers' conv-stack formula)."""
        return self.model._get_feat_extract_output_lengths(frame_lengths).to(torch.long)

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode waveform windows.

        Args:
            features: ``(W, 1, samples)`` 16 kHz waveform windows, zero-padded.
            mask: ``(W, samples)`` True for real samples.

        Returns:
            ``(hidden (W, T, out_dim), mask (W, T))``.
        """
        if features.dim() != 3 or features.shape[1] != 1:
            raise InputError(
                f"{type(self).__name__} expects waveform windows (W, 1, samples), got {tuple(features.shape)}"
            )
        wave = features[:, 0]  # (W, S)
        attn = mask.to(torch.long) if self._use_mask else None
        hidden = self.model(input_values=wave, attention_mask=attn).last_hidden_state  # (W, T, D)
        lengths = self.output_lengths(mask.to(torch.long).sum(-1))
        out_mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        return hidden, out_mask
