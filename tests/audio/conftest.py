"""Signals, speech and the transformers reference path shared by the audio tests."""

from __future__ import annotations

import shutil
import subprocess
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

SR = 16000


def chirp(seconds: float, sr: int = SR) -> np.ndarray:
    """Linear chirp 100 Hz -> 7 kHz at 0.4 amplitude."""
    t = np.arange(round(seconds * sr)) / sr
    f0, f1 = 100.0, 7000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) / (2 * max(seconds, 1e-9)) * t**2)
    return (0.4 * np.sin(phase)).astype(np.float32)


def harmonic(seconds: float, sr: int = SR, f0: float = 220.0) -> np.ndarray:
    """Eight harmonics of ``f0`` with 1/k amplitudes and a slow tremolo."""
    t = np.arange(round(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 9))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    return (0.2 * x).astype(np.float32)


def noise(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """White Gaussian noise, std 0.1, fixed seed."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(round(seconds * sr))).astype(np.float32)


def tile_to(x: np.ndarray, seconds: float, sr: int = SR) -> np.ndarray:
    """Repeat ``x`` with 0.3 s of silence between copies and cut to ``seconds``."""
    gap = np.zeros(round(0.3 * sr), dtype=np.float32)
    unit = np.concatenate([x, gap])
    reps = int(np.ceil(seconds * sr / unit.shape[0]))
    return np.tile(unit, reps)[: round(seconds * sr)]


@pytest.fixture(scope="session")
def signals() -> types.SimpleNamespace:
    """The signal generators above, as a fixture (tests do not import conftest)."""
    return types.SimpleNamespace(
        SR=SR, chirp=chirp, harmonic=harmonic, noise=noise, tile_to=tile_to
    )


@pytest.fixture(scope="session")
def speech_16k(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """A few seconds of real synthetic speech from espeak-ng, resampled to 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip(
            "espeak-ng is not installed (apt-get install espeak-ng); no real speech to test"
        )
    import soundfile

    from afnext.audio import resample

    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    text = (
        "The quick brown fox jumps over the lazy dog. "
        "Audio Flamingo listens to half an hour of sound and answers questions about it."
    )
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    data, rate = soundfile.read(path, dtype="float32")
    return resample(torch.from_numpy(data), rate, SR).numpy()


@pytest.fixture(scope="session")
def feature_extractor():
    """``WhisperFeatureExtractor(feature_size=128)``, as AF3 / AF-Next checkpoints configure it."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=128)


@pytest.fixture(scope="session")
def af3_reference(feature_extractor) -> Callable[[np.ndarray], dict]:
    """Run transformers' own AF3 chunking (``AudioFlamingo3Processor._process_audio``) on a wave.

    The processor's audio branch only touches ``feature_extractor``, ``max_audio_len`` and two of
    its own helpers, so it is called unbound on a stand-in that holds exactly those; no tokenizer
    or checkpoint is needed and the upstream code runs unmodified.
    """
    from transformers import AudioFlamingo3Processor

    stand_in = types.SimpleNamespace(
        feature_extractor=feature_extractor,
        max_audio_len=3600,
        replace_audio_token=lambda inputs, audio_idx: "",
    )
    stand_in._get_audio_token_length = types.MethodType(
        AudioFlamingo3Processor._get_audio_token_length, stand_in
    )

    def run(wave: np.ndarray) -> dict:
        inputs, _ = AudioFlamingo3Processor._process_audio(
            stand_in,
            [np.asarray(wave, dtype=np.float32)],
            sampling_rate=SR,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return inputs

    return run


@pytest.fixture
def write_audio(tmp_path: Path) -> Callable[..., Path]:
    """Write ``(frames,)`` or ``(frames, channels)`` float audio with soundfile; return the path."""
    import soundfile

    def write(
        name: str, data: np.ndarray, rate: int = SR, subtype: str | None = None, **kw
    ) -> Path:
        path = tmp_path / name
        soundfile.write(path, data, rate, subtype=subtype, **kw)
        return path

    return write
