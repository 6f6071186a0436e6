"""Tiny random models and signals shared by the model-core tests (no hub, no downloads)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

SR = 16000


def tone_mix(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Speech-band harmonics + noise: a deterministic, non-trivial test signal (float32, mono)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 60 * np.sin(2 * math.pi * 0.5 * t)
    phase = 2 * math.pi * np.cumsum(f0) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2
    wave = wave + 0.02 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)


def tiny_hf_configs(tokenizer, kind: str):
    """transformers AF3 ("af3") or Music Flamingo ("mf") config at tiny sizes for ``tokenizer``."""
    from transformers import (
        AudioFlamingo3Config,
        AudioFlamingo3EncoderConfig,
        MusicFlamingoConfig,
        Qwen2Config,
    )

    ids = {
        t: tokenizer.convert_tokens_to_ids(t) for t in ("<sound>", "<|sound_bos|>", "<|sound_eos|>")
    }
    audio = AudioFlamingo3EncoderConfig(
        num_mel_bins=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_size=40,
        max_source_positions=1500,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
    )
    if kind == "af3":
        return AudioFlamingo3Config(
            audio_config=audio, text_config=text, audio_token_id=ids["<sound>"]
        )
    return MusicFlamingoConfig(
        audio_config=audio,
        text_config=text,
        audio_token_id=ids["<sound>"],
        audio_bos_token_id=ids["<|sound_bos|>"],
        audio_eos_token_id=ids["<|sound_eos|>"],
    )


def save_tiny_hf(folder: Path, kind: str, seed: int = 0):
    """Build a tiny random transformers AF3 / Music Flamingo model and save it (weights + processor).

    Returns:
        ``(model, processor)`` of transformers.
    """
    from transformers import (
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Processor,
        AutoTokenizer,
        MusicFlamingoForConditionalGeneration,
        MusicFlamingoProcessor,
        WhisperFeatureExtractor,
    )

    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    config = tiny_hf_configs(tokenizer, kind)
    fe = WhisperFeatureExtractor(feature_size=128)
    if kind == "af3":
        model = AudioFlamingo3ForConditionalGeneration(config).eval()
        processor = AudioFlamingo3Processor(fe, tokenizer, max_audio_len=1800)
    else:
        model = MusicFlamingoForConditionalGeneration(config).eval()
        processor = MusicFlamingoProcessor(fe, tokenizer, max_audio_len=1800)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def chat(question: str, answer: str | None = None) -> list[dict]:
    """A one-turn conversation with one audio part before the question."""
    messages = [
        {
            "role": "user",
            "content": [{"type": "audio", "audio": None}, {"type": "text", "text": question}],
        }
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


TINY_LLM = {
    "model_type": "qwen2",
    "vocab_size": 1024,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
"""A one-layer Qwen2 for the bundled 1,024-token tokenizer (``HFCausalLM(config=TINY_LLM)``)."""

TINY_SSL = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "conv_dim": [16] * 7,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}
"""A one-layer HuBERT / WavLM (``SSLSpeechEncoder(model_type=..., config=TINY_SSL)``)."""
