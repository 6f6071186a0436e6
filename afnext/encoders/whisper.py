"""AF-Whisper: the Whisper encoder followed by AvgPool1d(2) and LayerNorm (25 tokens per second).

Built on transformers' ``AudioFlamingo3Encoder`` (``transformers/models/audioflamingo3/
modeling_audioflamingo3.py``), so its weights, attention back ends and numerics are exactly those of the
AF3 / Music Flamingo / AF-Next checkpoints. It can be built from sizes (random init), or loaded from a
Whisper, AF3, Music Flamingo or AF-Next checkpoint folder.

Windows are padded to 30 s, as the checkpoints were trained; a batch of shorter windows runs only the frames its
valid tokens depend on (:meth:`AFWhisperEncoder.frames_needed`), with the same modules: the valid tokens equal
transformers' padded forward (to float rounding), at the cost of the batch's longest window instead of 30 s
(a batch of short clips; a full window anywhere in the batch keeps all frames). With SDPA the padding is a key
mask, not transformers' square one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from afnext.audio.frontends import LogMelFrontEnd
from afnext.errors import CheckpointError, ConfigError
from afnext.specs import RecordsSpec
from afnext.transformers_compat import enable_checkpointing, prepare_attn_implementation

__all__ = ["AFWhisperEncoder"]

# Key prefixes of the encoder inside the checkpoints we read, most specific first.
_PREFIXES = (
    "model.audio_tower.",  # transformers >= 5 in-memory layout of AF3 / Music Flamingo
    "audio_tower.",  # released AF3 / Music Flamingo / AF-Next checkpoints
    "model.encoder.",  # WhisperForConditionalGeneration
    "encoder.",  # WhisperModel
    "",  # a bare AudioFlamingo3Encoder / WhisperEncoder folder
)


class AFWhisperEncoder(nn.Module, metaclass=RecordsSpec):
    """Whisper encoder + AvgPool1d(2) + LayerNorm, windows of 30 s of 128-bin log-mel.

    Args:
        d_model: Hidden size (1280 for Whisper-large-v3).
        num_layers: Transformer layers (32).
        num_heads: Attention heads (20).
        ffn_dim: Feed-forward size (5120).
        num_mel_bins: Mel bins of the input (128).
        max_source_positions: Positions after the conv stem (1500 = 30 s at 50 Hz).
        activation_function: Activation of the feed-forward layers.
        attn_implementation: transformers attention back end (``sdpa``, ``eager``, ``flash_attention_2``,
            ``afnext_varlen``; transformers' Whisper-style encoder has no ``flex_attention``).
    """

    window_seconds = 30.0

    def __init__(
        self,
        d_model: int = 1280,
        num_layers: int = 32,
        num_heads: int = 20,
        ffn_dim: int = 5120,
        num_mel_bins: int = 128,
        max_source_positions: int = 1500,
        activation_function: str = "gelu",
        attn_implementation: str = "sdpa",
    ) -> None:
        super().__init__()
        from transformers import AudioFlamingo3EncoderConfig
        from transformers.models.audioflamingo3.modeling_audioflamingo3 import (
            AudioFlamingo3Encoder,
        )

        config = AudioFlamingo3EncoderConfig(
            hidden_size=d_model,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=ffn_dim,
            num_mel_bins=num_mel_bins,
            max_source_positions=max_source_positions,
            activation_function=activation_function,
        )
        if attn_implementation == "flex_attention":
            raise ConfigError(
                "encoder.attn_implementation=flex_attention: transformers' Whisper-style encoder does not "
                "support it; use sdpa, eager, flash_attention_2 or afnext_varlen (the LLM may use flex_attention)"
            )
        config._attn_implementation = prepare_attn_implementation(attn_implementation)
        self.tower = AudioFlamingo3Encoder(config)
        self.out_dim = d_model
        self.n_mels = num_mel_bins
        # Conv stem stride 2 then pool 2: 4 input frames (10 ms each) per token -> 25 Hz.
        self.frame_rate = 100.0 / 4
        # A window is 2 x max_source_positions log-mel frames of 10 ms (30 s for Whisper's 1500).
        self.window_seconds = 2 * max_source_positions / 100.0
        self.front_end = LogMelFrontEnd(n_mels=num_mel_bins, window_seconds=self.window_seconds)
        self.tokens_per_window = int(self.output_lengths(max_source_positions * 2))

    def enable_activation_checkpointing(self) -> None:
        """Recompute each encoder layer's activations in the backward."""
        enable_checkpointing(self.tower)

    @property
    def config(self) -> Any:
        """The underlying transformers ``AudioFlamingo3EncoderConfig``."""
        return self.tower.config

    @staticmethod
    def output_lengths(frame_lengths: torch.Tensor | int) -> torch.Tensor | int:
        """Tokens of each window from its valid log-mel frames: conv ``(n-1)//2+1``, pool ``(c-2)//2+1``."""
        conv = (frame_lengths - 1) // 2 + 1
        return (conv - 2) // 2 + 1

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode windows.

        Args:
            features: ``(W, n_mels, 2 * max_source_positions)`` log-mel windows.
            mask: ``(W, frames)`` True (or 1) for real frames; padding of the last window is False.

        Returns:
            ``(hidden (W, T, out_dim), mask (W, T))`` with ``T = max_source_positions // 2`` when a window is
            full, fewer (but at least every window's valid tokens) when all are shorter.
        """
        mask = mask.to(torch.long)
        frames = mask.sum(-1)
        keep = self.frames_needed(frames, features.shape[-1])
        if keep < features.shape[-1] or self.tower.config._attn_implementation == "sdpa":
            hidden = self._encode_frames(features[..., :keep], mask[:, :keep])
        else:  # full windows, other back ends: transformers' own forward
            hidden = self.tower(features, input_features_mask=mask).last_hidden_state  # (W, T, D)
        lengths = self.output_lengths(frames)
        out_mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        return hidden, out_mask

    @staticmethod
    def frames_needed(frame_lengths: torch.Tensor, total: int) -> int:
        """Leading log-mel frames the valid tokens of every window depend on.

        Attention ignores padded frames (their keys are masked), so a valid token sees the padding only through
        the conv stem's receptive field: conv2 output ``j < (n-1)//2+1`` reads conv1 outputs ``2j-1 .. 2j+1``,
        which read frames up to ``2j+2 <= n+1``. The frames past ``n + 2`` of the longest window change nothing;
        cutting them makes a 5 s clip cost a sixth of a 30 s window in every layer.
        """
        if frame_lengths.numel() == 0:
            return total
        return min(
            total, max(int(frame_lengths.max()) + 2, 4)
        )  # 4: at least one position after the pool

    def _encode_frames(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """transformers' ``AudioFlamingo3Encoder.forward`` on the first ``F`` frames of each window (the rest
        being padding no valid token depends on): the same modules, the positions cut to the frames kept, and
        for SDPA a key mask instead of a square one. Valid tokens equal the full forward's
        (tests/encoders/test_whisper.py)."""
        from transformers.masking_utils import create_bidirectional_mask

        tower = self.tower
        seq_len = (features.shape[-1] - 1) // 2 + 1  # after conv2
        lengths = (mask.sum(-1) - 1) // 2 + 1
        conv_mask = torch.arange(seq_len, device=features.device) < lengths[:, None]
        hidden = nn.functional.gelu(tower.conv1(features))
        hidden = nn.functional.gelu(tower.conv2(hidden)).permute(0, 2, 1)
        hidden = hidden + tower.embed_positions.weight[:seq_len]
        hidden = nn.functional.dropout(hidden, p=tower.dropout, training=tower.training)
        if tower.config._attn_implementation == "sdpa":
            # A key mask that SDPA broadcasts, (W, 1, 1, T), instead of transformers' (W, 1, T, T): the same
            # result without building and converting T x T booleans per window (a quarter of a small encoder's
            # time; for the 60 windows of 30 minutes, 135 MB of booleans and SDPA's float copy of them). None
            # when no frame is padding, as transformers does. A window with no valid frame attends to its first
            # one (no NaN; its tokens are all masked).
            if bool(conv_mask.all()):
                attention_mask = None
            else:
                empty = ~conv_mask.any(-1, keepdim=True)
                first = torch.arange(seq_len, device=features.device) == 0
                attention_mask = (conv_mask | (empty & first))[:, None, None, :]
        else:
            attention_mask = create_bidirectional_mask(
                config=tower.config, inputs_embeds=hidden, attention_mask=conv_mask
            )
        for layer in tower.layers:
            if tower.training and tower.layerdrop > 0.0 and torch.rand([]) < tower.layerdrop:
                continue
            hidden = layer(hidden, attention_mask)
        hidden = tower.avg_pooler(hidden.permute(0, 2, 1)).permute(0, 2, 1)
        return tower.layer_norm(hidden)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        attn_implementation: str = "sdpa",
        dtype: torch.dtype | None = None,
    ) -> AFWhisperEncoder:
        """Load from a Whisper, AF3, Music Flamingo / AF-Next, or bare encoder checkpoint folder.

        Args:
            path: Folder with ``config.json`` and safetensors weights (sharded or not).
            attn_implementation: Attention back end.
            dtype: Cast the weights to this dtype (default: keep the stored dtype's float32 copy).

        Raises:
            CheckpointError: The folder is not one of those, or encoder weights are missing or unexpected.
        """
        from afnext.storage import read_config, read_state_dict

        path = Path(path)
        config = read_config(path)
        enc_cfg = _encoder_config_dict(config, path)
        encoder = cls(
            d_model=enc_cfg["d_model"],
            num_layers=enc_cfg["encoder_layers"],
            num_heads=enc_cfg["encoder_attention_heads"],
            ffn_dim=enc_cfg["encoder_ffn_dim"],
            num_mel_bins=enc_cfg["num_mel_bins"],
            max_source_positions=enc_cfg["max_source_positions"],
            activation_function=enc_cfg.get("activation_function", "gelu"),
            attn_implementation=attn_implementation,
        )
        state = read_state_dict(path)
        expected = set(encoder.tower.state_dict().keys())
        candidates = []  # (prefix, its keys) per prefix tried
        for prefix in _PREFIXES:
            picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if prefix == "":
                picked = {k: v for k, v in picked.items() if k in expected}
            candidates.append((prefix, picked))
            if expected <= set(picked):
                break
        else:
            # Name what is missing under the prefix that holds the most of the encoder: one weight short of
            # a full audio_tower is that weight, not every key at the top level.
            prefix, picked = max(candidates, key=lambda c: len(expected & set(c[1])))
            missing = sorted(expected - set(picked))
            raise CheckpointError(
                f"{path}: no complete AF-Whisper / Whisper encoder found. Closest: the keys under "
                f"{prefix or 'the top level'!r}, which lack {len(missing)} weight(s) (first 10): "
                f"{[prefix + k for k in missing[:10]]}. Expected keys under one of the prefixes "
                f"{[p for p in _PREFIXES if p]} or at the top level."
            )
        unexpected = sorted(set(picked) - expected)
        if unexpected:
            raise CheckpointError(f"{path}: unexpected encoder weights: {unexpected[:20]}")
        encoder.tower.load_state_dict(picked, strict=True)
        if dtype is not None:
            encoder.to(dtype)
        return encoder


def _encoder_config_dict(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """Normalise the encoder sizes of a Whisper / AF3 / Music Flamingo config to Whisper's key names."""
    model_type = config.get("model_type")
    if model_type in ("audioflamingo3", "musicflamingo", "audioflamingonext"):
        config = config.get("audio_config") or {}
        model_type = config.get("model_type", "audioflamingo3_encoder")
    names = {
        "hidden_size": "d_model",
        "num_hidden_layers": "encoder_layers",
        "num_attention_heads": "encoder_attention_heads",
        "intermediate_size": "encoder_ffn_dim",
    }
    out = {names.get(k, k): v for k, v in config.items()}
    # transformers' config classes carry defaults for keys a stored config may omit.
    if model_type in ("whisper",):
        from transformers import WhisperConfig

        defaults = WhisperConfig().to_dict()
    elif model_type in ("audioflamingo3_encoder", "musicflamingo_encoder", None):
        from transformers import AudioFlamingo3EncoderConfig

        defaults = {names.get(k, k): v for k, v in AudioFlamingo3EncoderConfig().to_dict().items()}
    else:
        raise CheckpointError(
            f"{path}/config.json: model_type {model_type!r} is not a Whisper / AF3 / Music Flamingo "
            "checkpoint; AFWhisperEncoder.from_pretrained reads those only."
        )
    merged = {**defaults, **out}
    missing = [
        k
        for k in ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim")
        if k not in merged
    ]
    if missing:
        raise CheckpointError(f"{path}/config.json lacks encoder sizes {missing}")
    return merged
