"""A tiny random model saved to a folder, and benchmark sets in released formats, for the engine, eval and
server tests (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile
import torch

from tests.helpers import tone_mix

MMAU_CHOICES = ["a dog barking", "a car horn", "rain", "a piano"]


def build_tiny_model(seed: int = 0):
    """The demo's architecture (AF-Whisper on 8 s windows, RoTE, frame stacking, Qwen2), random, eval mode.

    The LM head is scaled up (std ~3 instead of ~0.1): a random head's near-uniform logits make greedy argmax
    depend on rounding; a sharper one makes greedy answers a property of the weights, as in a trained model.
    """
    from hydra.utils import instantiate

    from afnext.config import compose_config

    torch.manual_seed(seed)
    cfg = compose_config("train", ["experiment=tiny"])
    model = instantiate(cfg.model, _convert_="all").eval()
    with torch.no_grad():
        model.llm.base.lm_head.weight.mul_(30.0)
    return model


def save_tiny_model(folder: Path, seed: int = 0) -> Path:
    """Save :func:`build_tiny_model` (afnext format) to ``folder``; returns it."""
    build_tiny_model(seed).save_pretrained(folder)
    return folder


def write_wav(path: Path, seconds: float, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), tone_mix(seconds, seed), 16000)
    return path


def write_mmau(root: Path, n: int, *, missing: tuple[int, ...] = (), seconds=None) -> Path:
    """An MMAU test-mini-format set of ``n`` items under ``root`` (items in ``missing`` have no audio file)."""
    records = []
    for i in range(n):
        audio = f"./test-mini-audios/{i:04d}.wav"
        if i not in missing:
            length = seconds(i) if seconds else 1.0 + (i * 0.37) % 6.0
            write_wav(root / audio, length, seed=i)
        records.append(
            {
                "id": f"item-{i:04d}",
                "audio_id": audio,
                "question": f"What is heard in clip {i}?",
                "choices": MMAU_CHOICES,
                "answer": MMAU_CHOICES[i % 4],
                "dataset": "synthetic",
                "task": ("sound", "music", "speech")[i % 3],
                "split": "test-mini",
                "category": "Reasoning",
                "sub-category": "Event",
                "difficulty": ("easy", "medium", "hard")[i % 3],
            }
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / "mmau-test-mini.json").write_text(json.dumps(records))
    return root


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(16000 * seconds), dtype=np.float32)
