"""Sample-rate conversion: one checked entry point with two backends.

One function so that file loading (:func:`afnext.audio.load_audio`) and feature extraction
(:func:`afnext.audio.whisper_features`) resample identically, and so that tests can resample a
reference path the same way.

Backends:

* ``"soxr"`` (default): libsoxr's VHQ polyphase resampler through `python-soxr`, the resampler
  ``librosa`` and Hugging Face ``datasets`` use, so features match the usual HF preprocessing path.
  It is a small wheel and runs with any PyTorch build.
* ``"torchaudio"``: ``torchaudio.functional.resample`` (windowed sinc, its defaults), in torch,
  differentiable and on any device. PyPI's torchaudio wheels load a CUDA-built extension at import,
  so they need a CUDA build of PyTorch (install ``afnext[torchaudio]`` beside one).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from afnext.errors import AudioError, ConfigError

__all__ = ["RESAMPLE_BACKENDS", "check_resample_backend", "resample"]

RESAMPLE_BACKENDS = ("soxr", "torchaudio")
Backend = Literal["soxr", "torchaudio"]


def check_resample_backend(backend: str, key: str = "resample backend") -> None:
    """Raise a ConfigError naming ``key`` and the choices unless ``backend`` is one of them."""
    if backend not in RESAMPLE_BACKENDS:
        raise ConfigError(
            f"{key}={backend!r} is unknown; use one of {', '.join(RESAMPLE_BACKENDS)}."
        )


def resample(
    wave: torch.Tensor, orig_freq: int, new_freq: int, backend: Backend = "soxr"
) -> torch.Tensor:
    """Resample audio along its last dimension.

    Nothing is cached between calls, so the function is safe in forked and spawned data-loader
    workers alike.

    Args:
        wave: ``(..., S)`` float waveform; the last dimension is time.
        orig_freq: Sample rate of ``wave`` in Hz.
        new_freq: Wanted sample rate in Hz.
        backend: ``"soxr"`` (default) or ``"torchaudio"``; see the module docstring.

    Returns:
        ``(..., S')`` waveform at ``new_freq`` in ``wave``'s dtype and device, ``S' =
        ceil(S * new_freq / orig_freq)`` (``soxr`` rounds to nearest, which can be one shorter);
        ``wave`` itself when the rates are equal.

    Raises:
        AudioError: If a rate is not a positive integer (a ``ValueError``).
        ConfigError: If ``backend`` is unknown, or is ``"torchaudio"`` and torchaudio cannot be
            imported (the message says why and how to install it).
    """
    for name, rate in (("orig_freq", orig_freq), ("new_freq", new_freq)):
        if int(rate) != rate or rate <= 0:
            raise AudioError(f"{name}={rate!r} must be a positive whole number of Hz.")
    check_resample_backend(backend)
    if orig_freq == new_freq:
        return wave
    if backend == "torchaudio":
        return _torchaudio(wave, int(orig_freq), int(new_freq))
    return _soxr(wave, int(orig_freq), int(new_freq))


def _soxr(wave: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    import soxr

    lead, samples = wave.shape[:-1], wave.shape[-1]
    # soxr takes (frames, channels) float32/float64 arrays: fold every leading dimension into channels.
    dtype = np.float64 if wave.dtype == torch.float64 else np.float32
    frames = wave.detach().reshape(-1, samples).T.cpu().numpy().astype(dtype, copy=False)
    out = soxr.resample(np.ascontiguousarray(frames), orig_freq, new_freq, quality="VHQ")
    out = torch.from_numpy(np.ascontiguousarray(out.T)).reshape(*lead, out.shape[0])
    return out.to(device=wave.device, dtype=wave.dtype)


def _torchaudio(wave: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    try:
        import torchaudio.functional
    except (ImportError, OSError) as exc:
        raise ConfigError(
            f"resample backend 'torchaudio' is not usable here ({exc}). PyPI's torchaudio needs a "
            "CUDA build of PyTorch: `pip install 'afnext[torchaudio]'` beside one, or use the "
            "default backend 'soxr'."
        ) from exc
    return torchaudio.functional.resample(wave, orig_freq, new_freq)
