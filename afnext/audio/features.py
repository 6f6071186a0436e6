"""Whisper log-mel features for all windows of a waveform at once.

The numbers follow ``WhisperFeatureExtractor`` (``transformers/models/whisper/
feature_extraction_whisper.py``, ``_torch_extract_fbank_features``) as the AF3 processor calls it
(``transformers/models/audioflamingo3/processing_audioflamingo3.py``, ``_process_audio``: 30 s
chunks, each padded to 30 s): centred STFT with reflect padding, periodic Hann window, n_fft 400,
hop 160, last frame dropped, power 2, Slaney mel filters, ``log10(max(mel, 1e-10))``, then per
window ``max(x, x.max() - 8)`` and ``(x + 4) / 4``.

What differs is how the work is laid out: one batched STFT over every window, the mel projection
as a single batched GEMM reading the spectrum in place, and the log / clamp / normalisation done in
place on the output, so a 30 min input allocates a few large buffers instead of a dozen.
"""

from __future__ import annotations

import torch

from afnext.audio.mel import mel_filter_bank
from afnext.audio.resample import resample
from afnext.audio.windows import (
    HOP_LENGTH,
    MAX_SECONDS,
    SAMPLING_RATE,
    WINDOW_SECONDS,
    check_duration,
    check_mono,
    split_windows,
)

__all__ = ["N_FFT", "log_mel_spectrogram", "whisper_features"]

N_FFT = 400
"""STFT size: 25 ms at 16 kHz (Whisper)."""


def log_mel_spectrogram(
    windows: torch.Tensor,
    *,
    n_mels: int = 128,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    sampling_rate: int = SAMPLING_RATE,
) -> torch.Tensor:
    """Whisper-normalised log-mel spectrogram of equal-length windows, batched.

    Args:
        windows: ``(W, N)`` waveforms (already padded to the window length), any float dtype;
            computed in float32 on their device. ``N`` must exceed ``n_fft // 2`` (reflect pad).
        n_mels: Number of mel bands.
        n_fft: FFT size.
        hop_length: Hop between frames in samples.
        sampling_rate: Sample rate in Hz (sets the mel filter frequencies).

    Returns:
        ``(W, n_mels, N // hop_length)`` float32 features, each window normalised on its own.
    """
    windows = windows.to(torch.float32)
    num_frames = windows.shape[-1] // hop_length
    hann = torch.hann_window(n_fft, periodic=True, device=windows.device)
    spec = torch.stft(
        windows,
        n_fft,
        hop_length,
        window=hann,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )  # (W, n_fft // 2 + 1, N // hop + 1), a transposed view of a (W, frames, bins) buffer
    # Work on the frame-major buffer torch.stft filled; drop the last frame like upstream.
    spec = spec.mT[:, :num_frames]  # (W, T, F)
    # |X|^2 = re^2 + im^2 without the sqrt that .abs() ** 2 takes, as two elementwise passes over the interleaved
    # buffer (3x faster here than squaring it and reducing its last dimension of 2).
    parts = torch.view_as_real(spec)  # (W, T, F, 2)
    re, im = parts[..., 0], parts[..., 1]
    power = torch.mul(re, re).addcmul_(im, im)  # (W, T, F)
    del parts, re, im

    bank = mel_filter_bank(
        n_mels,
        n_fft=n_fft,
        sampling_rate=sampling_rate,
        device=windows.device,
        dtype=torch.float32,
    )  # (n_mels, F)
    # (n_mels, F) @ (W, F, T): power.mT is a transposed view, which BLAS reads without a copy.
    mel = torch.matmul(bank, power.mT)  # (W, n_mels, T)
    del spec, power

    log_spec = mel.clamp_(min=1e-10).log10_()
    # Whisper's dynamic range: at most 80 dB (8 in log10) below the window's own peak.
    peak = log_spec.amax(dim=(1, 2), keepdim=True)  # (W, 1, 1)
    torch.maximum(log_spec, peak - 8.0, out=log_spec)
    return log_spec.add_(4.0).div_(4.0)


def whisper_features(
    wave: torch.Tensor,
    sampling_rate: int = SAMPLING_RATE,
    *,
    n_mels: int = 128,
    window_seconds: float = WINDOW_SECONDS,
    max_seconds: float | None = MAX_SECONDS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel features and frame mask of every 30 s window of a mono waveform.

    Equal (to float32 rounding, max abs diff well under 1e-4) to the ``input_features`` and
    ``input_features_mask`` the AF3 processor gets from
    ``WhisperFeatureExtractor(feature_size=n_mels)`` for the same waveform.

    Args:
        wave: ``(S,)`` mono waveform at ``sampling_rate``; resampled to 16 kHz first if needed.
        sampling_rate: Sample rate of ``wave`` in Hz.
        n_mels: Number of mel bands (128 for AF-Whisper / Whisper-large-v3).
        window_seconds: Window length in seconds.
        max_seconds: Longest audio accepted; ``None`` means no limit.

    Returns:
        ``features``: ``(W, n_mels, T)`` float32, ``T = window_seconds * 100`` (3000 for 30 s).
        ``mask``: ``(W, T)`` bool, True on frames that hold real audio; window ``w`` has
        ``ceil(real_samples_w / 160)`` of them.

    Raises:
        AudioError: If ``wave`` is not 1-D, is empty, or is longer than ``max_seconds``.
    """
    # Check shape and length before resampling, so bad input fails fast and cheaply.
    check_mono(wave)
    check_duration(wave.shape[0], sampling_rate, max_seconds, source="<waveform>")
    wave = resample(wave.to(torch.float32), sampling_rate, SAMPLING_RATE)
    windows = split_windows(
        wave,
        sampling_rate=SAMPLING_RATE,
        window_seconds=window_seconds,
        max_seconds=max_seconds,
    )
    features = log_mel_spectrogram(windows.samples, n_mels=n_mels)
    return features, windows.frame_mask(HOP_LENGTH)
