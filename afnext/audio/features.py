"""Whisper log-mel features for all windows of a waveform at once.

The numbers follow ``WhisperFeatureExtractor`` (``transformers/models/whisper/
feature_extraction_whisper.py``, ``_torch_extract_fbank_features``) as the AF3 processor calls it
(``transformers/models/audioflamingo3/processing_audioflamingo3.py``, ``_process_audio``: 30 s
chunks, each padded to 30 s): centred STFT with reflect padding, periodic Hann window, n_fft 400,
hop 160, last frame dropped, power 2, Slaney mel filters, ``log10(max(mel, 1e-10))``, then per
window ``max(x, x.max() - 8)`` and ``(x + 4) / 4``.

What differs is how the work is laid out: on the CPU the windows go through in blocks of a few (each block's
buffers stay in cache from the STFT to the normalisation), each block as one batched STFT, the power spectrum
in two elementwise passes, the mel projection as a few GEMMs over the bins each group of bands uses, reading the
spectrum in place and writing into the result, and the log / clamp / normalisation in place there.
"""

from __future__ import annotations

from collections.abc import Sequence

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
    frame_mask,
    window_lengths,
)

__all__ = ["CPU_BLOCK_WINDOWS", "N_FFT", "log_mel_spectrogram", "whisper_features"]

N_FFT = 400
"""STFT size: 25 ms at 16 kHz (Whisper)."""


CPU_BLOCK_WINDOWS = 4
"""Windows per block on the CPU: each window's STFT, power and mel buffers (~10 MB) stay in cache through the
block's steps. 30 min of audio on 2 cores: 0.24 s in blocks of 4 windows against 0.51 s in one batch (blocks of
2-6 all gave 0.24-0.27 s; benchmarks/RESULTS.md)."""


def log_mel_spectrogram(
    windows: torch.Tensor,
    *,
    n_mels: int = 128,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    sampling_rate: int = SAMPLING_RATE,
    block_windows: int | None = None,
) -> torch.Tensor:
    """Whisper-normalised log-mel spectrogram of equal-length windows, batched.

    Args:
        windows: ``(W, N)`` waveforms (already padded to the window length), any float dtype;
            computed in float32 on their device. ``N`` must exceed ``n_fft // 2`` (reflect pad).
        n_mels: Number of mel bands.
        n_fft: FFT size.
        hop_length: Hop between frames in samples.
        sampling_rate: Sample rate in Hz (sets the mel filter frequencies).
        block_windows: Windows computed together, start to end; default :data:`CPU_BLOCK_WINDOWS` on the CPU
            and all of them on other devices. The result does not depend on it.

    Returns:
        ``(W, n_mels, N // hop_length)`` float32 features, each window normalised on its own.
    """
    return _log_mel(
        [windows.to(torch.float32)],
        n_mels=n_mels,
        n_fft=n_fft,
        hop_length=hop_length,
        sampling_rate=sampling_rate,
        block_windows=block_windows,
    )


def _log_mel(
    parts: Sequence[torch.Tensor],
    *,
    n_mels: int,
    n_fft: int,
    hop_length: int,
    sampling_rate: int,
    block_windows: int | None,
) -> torch.Tensor:
    """:func:`log_mel_spectrogram` of the windows of ``parts`` (float32 ``(w_i, N)`` each), in order."""
    device, length = parts[0].device, parts[0].shape[-1]
    count, num_frames = sum(p.shape[0] for p in parts), length // hop_length
    hann = torch.hann_window(n_fft, periodic=True, device=device)
    bank = mel_filter_bank(
        n_mels, n_fft=n_fft, sampling_rate=sampling_rate, device=device, dtype=torch.float32
    )  # (n_mels, F)
    groups = _mel_groups(bank)
    out = torch.empty((count, n_mels, num_frames), device=device, dtype=torch.float32)
    if block_windows is None:
        block_windows = CPU_BLOCK_WINDOWS if device.type == "cpu" else max(count, 1)
    row = 0
    for part in parts:
        for start in range(0, part.shape[0], block_windows):
            block = part[start : start + block_windows]
            _log_mel_block(
                block, out[row : row + block.shape[0]], hann, groups, hop_length, num_frames
            )
            row += block.shape[0]
    return out


MEL_GROUP = 16
"""Mel bands per GEMM. The Slaney filters are 98.5% zeros (394 of 25,728 for 128 bands x 201 bins): each group of
16 consecutive bands touches a narrow range of bins, so 8 GEMMs over those ranges do 13% of the dense GEMM's work
(2.4x faster here on 4 windows: 1.96 ms against 4.77 ms)."""


def _mel_groups(bank: torch.Tensor) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """``(first band, end band, first bin, end bin, weights)`` per group of :data:`MEL_GROUP` bands."""
    used = bank != 0
    bins = torch.arange(bank.shape[1], device=bank.device)
    first = torch.where(used, bins, bank.shape[1]).amin(dim=1).tolist()
    last = torch.where(used, bins + 1, 0).amax(dim=1).tolist()
    groups = []
    for a in range(0, bank.shape[0], MEL_GROUP):
        b = min(a + MEL_GROUP, bank.shape[0])
        lo, hi = min(first[a:b]), max(last[a:b])
        hi = max(hi, lo)  # a group of empty bands: no bins
        groups.append((a, b, lo, hi, bank[a:b, lo:hi].contiguous()))
    return groups


def _log_mel_block(
    windows: torch.Tensor,
    out: torch.Tensor,
    hann: torch.Tensor,
    groups: list[tuple[int, int, int, int, torch.Tensor]],
    hop_length: int,
    num_frames: int,
) -> None:
    """Features of a block of windows into ``out`` (``(w, n_mels, T)``, a slice of the result)."""
    # Centred frames with reflect padding, the last frame dropped like upstream: torch.stft's framing, done by
    # hand because torch.stft took twice as long here as padding, windowing and rfft (in-cache, 4 windows: 7.8 ms
    # against 3.9 ms), and its output is a transposed view where rfft's is frame-major.
    n_fft = hann.shape[0]
    padded = torch.nn.functional.pad(
        windows, (n_fft // 2, n_fft // 2), mode="reflect"
    )  # (w, N + n_fft)
    frames = padded.unfold(-1, n_fft, hop_length)[:, :num_frames]  # (w, T, n_fft), a view
    spec = torch.fft.rfft(frames * hann)  # (w, T, F) complex
    parts = torch.view_as_real(spec)  # (w, T, F, 2)
    # |X|^2 = re^2 + im^2 without the sqrt that .abs() ** 2 takes, as two elementwise passes over the
    # interleaved buffer (3x faster here than squaring it and reducing its last dimension of 2).
    re, im = parts[..., 0], parts[..., 1]
    power = torch.mul(re, re).addcmul_(im, im)  # (w, T, F)
    del padded, frames, spec, parts, re, im
    # Per group, (bands, bins) @ (w, bins, T): power.mT is a transposed view, which BLAS reads without a copy.
    for a, b, lo, hi, weights in groups:
        if hi > lo:
            torch.matmul(weights, power[..., lo:hi].mT, out=out[:, a:b])  # (w, bands, T)
        else:
            out[:, a:b].zero_()
    del power
    log_spec = out.clamp_(min=1e-10).log10_()
    # Whisper's dynamic range: at most 80 dB (8 in log10) below the window's own peak.
    peak = log_spec.amax(dim=(1, 2), keepdim=True)  # (w, 1, 1)
    torch.maximum(log_spec, peak - 8.0, out=log_spec)
    log_spec.add_(4.0).div_(4.0)


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
    per_window, lengths = window_lengths(
        wave, sampling_rate=SAMPLING_RATE, window_seconds=window_seconds, max_seconds=max_seconds
    )
    # The full windows are a view of the waveform; only a partial last window is copied (zero-padded), where
    # split_windows copies the whole waveform.
    full = wave.shape[0] // per_window
    parts = [wave[: full * per_window].view(full, per_window)] if full else []
    if full < lengths.shape[0]:
        tail = wave[full * per_window :]
        parts.append(torch.nn.functional.pad(tail, (0, per_window - tail.shape[0]))[None])
    features = _log_mel(
        parts,
        n_mels=n_mels,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        sampling_rate=SAMPLING_RATE,
        block_windows=None,
    )
    return features, frame_mask(lengths, HOP_LENGTH, features.shape[-1])
