"""Slaney mel filter bank, as Whisper's feature extractor builds it.

The formulas follow ``transformers/audio_utils.py`` (``hertz_to_mel``, ``mel_to_hertz``,
``_create_triangular_filter_bank`` and ``mel_filter_bank`` with ``norm="slaney"``,
``mel_scale="slaney"``), which in turn match ``librosa.filters.mel``. The bank is computed in
float64, like upstream, and only then cast, so features agree with ``WhisperFeatureExtractor`` to
float32 rounding. (``torchaudio.functional.melscale_fbanks`` computes in float32 and is off by up
to about 4e-6 relative.)
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["hertz_to_mel", "mel_filter_bank", "mel_to_hertz"]

# Slaney's "Auditory Toolbox" mel scale: linear below 1 kHz, logarithmic above.
_MIN_LOG_HERTZ = 1000.0
_MIN_LOG_MEL = 15.0
_LOGSTEP = math.log(6.4) / 27.0


def hertz_to_mel(freq: torch.Tensor) -> torch.Tensor:
    """Convert frequencies in Hz to the Slaney mel scale.

    Args:
        freq: Frequencies in Hz, any shape.

    Returns:
        Mels, same shape and dtype as ``freq``.
    """
    linear = 3.0 * freq / 200.0
    log = _MIN_LOG_MEL + torch.log(freq.clamp(min=_MIN_LOG_HERTZ) / _MIN_LOG_HERTZ) / _LOGSTEP
    return torch.where(freq >= _MIN_LOG_HERTZ, log, linear)


def mel_to_hertz(mels: torch.Tensor) -> torch.Tensor:
    """Convert Slaney mels back to Hz (inverse of :func:`hertz_to_mel`).

    Args:
        mels: Mels, any shape.

    Returns:
        Frequencies in Hz, same shape and dtype as ``mels``.
    """
    linear = 200.0 * mels / 3.0
    log = _MIN_LOG_HERTZ * torch.exp(_LOGSTEP * (mels - _MIN_LOG_MEL))
    return torch.where(mels >= _MIN_LOG_MEL, log, linear)


@functools.lru_cache(maxsize=16)
def mel_filter_bank(
    n_mels: int = 128,
    *,
    n_fft: int = 400,
    sampling_rate: int = 16000,
    f_min: float = 0.0,
    f_max: float = 8000.0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Slaney-normalised triangular mel filters, built once per argument set and cached.

    The cache holds small read-only tensors only (128 x 201 floats for Whisper); a forked worker
    inherits them harmlessly and a spawned one rebuilds them on first use.

    Args:
        n_mels: Number of mel bands (128 for Whisper-large-v3 / AF-Whisper, 80 for older Whispers).
        n_fft: FFT size; the bank covers its ``n_fft // 2 + 1`` one-sided bins.
        sampling_rate: Sample rate of the audio in Hz.
        f_min: Lowest filter edge in Hz.
        f_max: Highest filter edge in Hz.
        device: Device of the returned tensor.
        dtype: Dtype of the returned tensor (the bank itself is computed in float64).

    Returns:
        ``(n_mels, n_fft // 2 + 1)`` filter matrix; ``bank @ power_spectrum`` gives mel energies.
        Treat it as read-only: it is shared between callers.
    """
    n_bins = n_fft // 2 + 1
    f64 = torch.float64
    mel_points = torch.linspace(
        float(hertz_to_mel(torch.tensor(f_min, dtype=f64))),
        float(hertz_to_mel(torch.tensor(f_max, dtype=f64))),
        n_mels + 2,
        dtype=f64,
    )
    filter_freqs = mel_to_hertz(mel_points)  # (n_mels + 2,) band edges and centres in Hz
    # Upstream spaces the bins over [0, sampling_rate // 2] (integer division), keep that.
    fft_freqs = torch.linspace(0, sampling_rate // 2, n_bins, dtype=f64)  # (n_bins,)

    # _create_triangular_filter_bank: rising and falling slopes, clipped at zero.
    filter_diff = filter_freqs.diff()  # (n_mels + 1,)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]  # (n_bins, n_mels + 2)
    down = -slopes[:, :-2] / filter_diff[:-1]  # (n_bins, n_mels)
    up = slopes[:, 2:] / filter_diff[1:]  # (n_bins, n_mels)
    bank = torch.minimum(down, up).clamp(min=0.0)  # (n_bins, n_mels)

    # Slaney normalisation: divide each triangle by its width so every band has equal area.
    bank = bank * (2.0 / (filter_freqs[2:] - filter_freqs[:-2]))[None, :]
    return bank.T.contiguous().to(device=device, dtype=dtype)  # (n_mels, n_bins)
