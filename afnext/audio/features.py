"""Whisper log-mel features for all windows of a waveform at once.

The numbers follow ``WhisperFeatureExtractor`` (``transformers/models/whisper/
feature_extraction_whisper.py``, ``_torch_extract_fbank_features``) as the AF3 processor calls it
(``transformers/models/audioflamingo3/processing_audioflamingo3.py``, ``_process_audio``: 30 s
chunks, each padded to 30 s): centred STFT with reflect padding, periodic Hann window, n_fft 400,
hop 160, last frame dropped, power 2, Slaney mel filters, ``log10(max(mel, 1e-10))``, then per
window ``max(x, x.max() - 8)`` and ``(x + 4) / 4``.

What differs is how the work is laid out:

- On the CPU each window goes start to end on its own (its buffers stay in cache from the framing to the
  normalisation), and the windows are shared among ``torch.get_num_threads()`` Python threads that each run
  their ops on one thread (ATen releases the GIL), the calling thread among them. 30 min of audio on 2 cores:
  1.5x faster than the same ops on two intra-op threads, which synchronise on every op. On other devices all
  windows go as one batch.
- Frames are read as views of the waveform; only the frames that reach into the reflect padding (two at the
  start, one at the end of a 30 s window) are built from a padded copy of the window's edges.
- ``|X|^2`` is the rfft output squared in place as interleaved (re, im) floats, and the mel filters are applied
  per group of bands to the bins that group uses, with each weight repeated for re^2 and im^2: the sum of the
  two is folded into the GEMM instead of a strided pass.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch

from afnext.audio.mel import mel_filter_bank
from afnext.audio.resample import Backend, resample
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
from afnext.errors import AudioError

__all__ = ["MEL_GROUP", "N_FFT", "log_mel_spectrogram", "whisper_features"]

N_FFT = 400
"""STFT size: 25 ms at 16 kHz (Whisper)."""

MEL_GROUP = 8
"""Mel bands per GEMM. The Slaney filters are 98.5% zeros (394 of 25,728 for 128 bands x 201 bins): each group of
8 consecutive bands touches a narrow range of bins, so 16 GEMMs over those ranges do 7% of the dense GEMM's work.
One window, one thread: 0.69 ms in groups of 8 against 0.81 (16), 1.15 (32) and 2.28 ms dense."""


def log_mel_spectrogram(
    windows: torch.Tensor,
    *,
    n_mels: int = 128,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    sampling_rate: int = SAMPLING_RATE,
    workers: int | None = None,
) -> torch.Tensor:
    """Whisper-normalised log-mel spectrogram of equal-length windows, batched.

    Args:
        windows: ``(W, N)`` waveforms (already padded to the window length), any float dtype;
            computed in float32 on their device. ``N`` must exceed ``n_fft // 2`` (reflect pad).
        n_mels: Number of mel bands.
        n_fft: FFT size.
        hop_length: Hop between frames in samples.
        sampling_rate: Sample rate in Hz (sets the mel filter frequencies).
        workers: CPU threads the windows are shared among; default ``torch.get_num_threads()``. Ignored on
            other devices and on torch builds without OpenMP. The result does not depend on it.

    Returns:
        ``(W, n_mels, N // hop_length)`` float32 features, each window normalised on its own.

    Raises:
        AudioError: If ``windows`` is not 2-D, its windows are not longer than ``n_fft // 2`` samples, or one
            holds NaN or inf.
    """
    if windows.dim() != 2 or windows.shape[-1] <= n_fft // 2:
        raise AudioError(
            f"log_mel_spectrogram needs (windows, samples) with more than n_fft // 2 = {n_fft // 2} samples "
            f"per window (the reflect padding), got shape {tuple(windows.shape)}; pad the windows (split_windows "
            "does) or use a smaller n_fft.",
            source="<windows>",
        )
    return _log_mel(
        [windows.to(torch.float32)],
        n_mels=n_mels,
        n_fft=n_fft,
        hop_length=hop_length,
        sampling_rate=sampling_rate,
        workers=workers,
    )


class _Plan(NamedTuple):
    """What every window's computation shares."""

    hann: torch.Tensor  # (n_fft,) periodic Hann window
    groups: list[tuple[int, int, int, int, torch.Tensor]]  # see _mel_groups
    hop_length: int
    num_frames: int


def _log_mel(
    parts: Sequence[torch.Tensor],
    *,
    n_mels: int,
    n_fft: int,
    hop_length: int,
    sampling_rate: int,
    workers: int | None,
    source: str = "<windows>",
    last_samples: int | None = None,
) -> torch.Tensor:
    """:func:`log_mel_spectrogram` of the windows of ``parts`` (float32 ``(w_i, N)`` each), in order.

    ``last_samples``: the last window holds real samples only before this index, zeros after (a zero-padded
    partial window); its frames that lie wholly in the zeros are not computed: their power is exactly 0, so
    their log is the floor, ``log10(1e-10)``, which is written directly (the same values to float rounding: the
    other frames' GEMMs run over fewer columns; a 5 s clip at a sixth of a 30 s window's cost).

    Raises:
        AudioError: A window holds a non-finite sample (named with ``source``).
    """
    device, length = parts[0].device, parts[0].shape[-1]
    count, num_frames = sum(p.shape[0] for p in parts), length // hop_length
    plan = _plan(n_mels, n_fft, hop_length, sampling_rate, num_frames, device)
    out = torch.empty((count, n_mels, num_frames), device=device, dtype=torch.float32)
    # (windows, their rows of out, frames to compute): one window at a time on the CPU, each part as one batch
    # elsewhere; a zero-padded last window alone, with only the frames that reach its real samples.
    jobs, row = [], 0
    for index, part in enumerate(parts):
        partial = index == len(parts) - 1 and last_samples is not None
        whole = part[:-1] if partial else part  # the windows computed in full
        if device.type == "cpu":
            jobs += [
                (whole[i : i + 1], out[row + i : row + i + 1], num_frames)
                for i in range(whole.shape[0])
            ]
        elif whole.shape[0]:
            jobs.append((whole, out[row : row + whole.shape[0]], num_frames))
        if partial:
            live = _live_frames(last_samples, n_fft, hop_length, length, num_frames)
            last = row + part.shape[0] - 1
            jobs.append((part[-1:], out[last : last + 1], live))
        row += part.shape[0]
    # Helper threads need a per-thread intra-op setting, which torch has when built with OpenMP (as its wheels are);
    # its native thread pool is process-wide, so there the calling thread does it all on the shared pool.
    threads = 1
    if device.type == "cpu" and torch._C.has_openmp:
        threads = min(workers or torch.get_num_threads(), len(jobs))
    with torch.no_grad():
        if threads <= 1:
            _run_jobs(jobs, plan)
        else:
            # The threads take the next window from one queue (a slow core does fewer, rather than holding the
            # others up at the end) and run their ops on one intra-op thread each. The caller's setting goes back
            # in place once a thread is done: it is per thread for the OpenMP / MKL pools, but ATen also keeps it
            # as the default of threads started later.
            restore, queue = torch.get_num_threads(), iter(jobs)
            with ThreadPoolExecutor(threads - 1, thread_name_prefix="afnext-log-mel") as pool:
                running = [pool.submit(_run_jobs, queue, plan, restore) for _ in range(threads - 1)]
                _run_jobs(queue, plan, restore)  # the calling thread is one of them
                for job in running:
                    job.result()
    # A NaN or inf sample makes its whole window non-finite (the FFT spreads it over the frame, the peak's
    # clamp over the window), so one value per window tells, without a pass over the input.
    finite = torch.isfinite(out[:, 0, 0])
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        seconds = length / sampling_rate
        where = ", ".join(f"{w} ({w * seconds:g}-{(w + 1) * seconds:g} s)" for w in bad[:5])
        raise AudioError(
            f"non-finite samples (NaN or inf) in window {where}{' ...' if len(bad) > 5 else ''} of "
            f"{count}; clean the audio (e.g. torch.nan_to_num) or drop it",
            source,
        )
    return out


def _live_frames(samples: int, n_fft: int, hop: int, length: int, num_frames: int) -> int:
    """Frames of a window with real samples before ``samples`` (zeros after) that read any of them: frame ``t``
    starts at sample ``t * hop - n_fft // 2``. All frames when one of the others would reach the window's end
    (its reflect padding reads the window's own last samples)."""
    live = min(num_frames, -(-(samples + n_fft // 2) // hop))
    inside = (length - (n_fft - n_fft // 2)) // hop + 1  # frames that end inside the window
    return live if live < inside else num_frames


@functools.lru_cache(maxsize=16)
def _plan(
    n_mels: int,
    n_fft: int,
    hop_length: int,
    sampling_rate: int,
    num_frames: int,
    device: torch.device,
) -> _Plan:
    """The window, the mel groups and the sizes every window of a call shares (made once per setting: grouping
    the filter bank costs as much as the log-mel of a 5 s clip). Read only."""
    bank = mel_filter_bank(
        n_mels, n_fft=n_fft, sampling_rate=sampling_rate, device=device, dtype=torch.float32
    )  # (n_mels, F)
    return _Plan(
        torch.hann_window(n_fft, periodic=True, device=device),
        _mel_groups(bank),
        hop_length,
        num_frames,
    )


def _run_jobs(
    jobs: Iterable[tuple[torch.Tensor, torch.Tensor, int]], plan: _Plan, restore: int | None = None
) -> None:
    """Features of each ``(windows, out rows, frames to compute)`` job in turn; with ``restore``, on one
    intra-op thread.

    ``jobs`` may be one iterator shared by several threads: a list iterator hands each item out once (its
    ``next`` runs under the GIL).
    """
    if restore is not None:
        torch.set_num_threads(1)
    try:
        frames = None
        for windows, out, live in jobs:
            shape = (windows.shape[0], plan.num_frames, plan.hann.shape[0])
            if frames is None or frames.shape != shape:
                frames = torch.empty(shape, device=windows.device, dtype=torch.float32)
            _log_mel_block(windows, out, frames, plan, live)
    finally:
        if restore is not None:
            torch.set_num_threads(restore)


def _mel_groups(bank: torch.Tensor) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """``(first band, end band, first bin, end bin, weights)`` per group of :data:`MEL_GROUP` bands.

    ``weights`` is ``(bands, 2 * bins)``: each filter weight twice, for the re^2 and im^2 of its bin.
    """
    used = bank != 0
    bins = torch.arange(bank.shape[1], device=bank.device)
    first = torch.where(used, bins, bank.shape[1]).amin(dim=1).tolist()
    last = torch.where(used, bins + 1, 0).amax(dim=1).tolist()
    groups = []
    for a in range(0, bank.shape[0], MEL_GROUP):
        b = min(a + MEL_GROUP, bank.shape[0])
        lo, hi = min(first[a:b]), max(last[a:b])
        hi = max(hi, lo)  # a group of empty bands: no bins
        weights = bank[a:b, lo:hi].repeat_interleave(2, dim=1).contiguous()
        groups.append((a, b, lo, hi, weights))
    return groups


def _frames(windows: torch.Tensor, frames: torch.Tensor, plan: _Plan, count: int) -> None:
    """Write the first ``count`` Hann-windowed frames of a centred, reflect-padded STFT of ``windows`` into
    ``frames``.

    ``(w, N)`` -> ``(w, T, n_fft)``, frame ``t`` centred on sample ``t * hop``, the last frame dropped like
    upstream (``T = N // hop``). Frames inside the window are read as views; only those that reach into the
    padding come from a padded copy of the window's edge. ``count`` is ``T``, or fewer frames that all end
    inside the window (:func:`_live_frames`).
    """
    hann, hop = plan.hann, plan.hop_length
    n_fft, length = hann.shape[0], windows.shape[-1]
    pad = n_fft // 2
    # Frame t covers samples [t * hop - pad, t * hop - pad + n_fft): frames [first, end) lie inside the window
    # (n_fft - pad is pad + 1 for an odd n_fft).
    first = -(-pad // hop)
    end = min(count, (length - (n_fft - pad)) // hop + 1)
    reflect = torch.nn.functional.pad
    if end <= first:  # a short window: every frame reaches into the padding
        padded = reflect(windows, (pad, pad), mode="reflect")
        torch.mul(padded.unfold(-1, n_fft, hop)[:, :count], hann, out=frames)
        return
    inner = windows[:, first * hop - pad :].unfold(-1, n_fft, hop)[:, : end - first]
    torch.mul(inner, hann, out=frames[:, first:end])
    # Reflection only reads the first (last) pad + 1 samples, so padding the edge alone gives the same frames.
    head = reflect(windows[:, : (first - 1) * hop + n_fft], (pad, 0), mode="reflect")
    torch.mul(head.unfold(-1, n_fft, hop)[:, :first], hann, out=frames[:, :first])
    if end < count:
        tail = reflect(windows[:, end * hop - pad :], (0, pad), mode="reflect")
        torch.mul(tail.unfold(-1, n_fft, hop)[:, : count - end], hann, out=frames[:, end:])


def _log_mel_block(
    windows: torch.Tensor, out: torch.Tensor, frames: torch.Tensor, plan: _Plan, live: int
) -> None:
    """Features of ``(w, N)`` windows into ``out`` (``(w, n_mels, T)``); ``frames`` is scratch space. Frames
    from ``live`` on read only zeros: their power is 0 and is written as such."""
    full = out
    if live < plan.num_frames:
        out[..., live:].zero_()
        out, frames = out[..., :live], frames[:, :live]
    _frames(windows, frames, plan, live)
    spec = torch.fft.rfft(frames)  # (w, T, F) complex; rfft's out= copies, so it allocates
    squares = torch.view_as_real(spec).flatten(-2)  # (w, T, 2F): re, im of each bin
    squares.mul_(squares)
    del spec
    # Per group, (bands, 2 bins) @ (w, 2 bins, T): the GEMM adds re^2 and im^2 up with the weights, and reads
    # squares.mT, a transposed view, without a copy.
    # One window: plain GEMMs (a batch of one goes through bmm, 2.5x slower).
    if squares.shape[0] == 1:
        squares, out_rows = squares[0], out[0]
    else:
        out_rows = out
    for a, b, lo, hi, weights in plan.groups:
        if hi > lo:
            torch.matmul(weights, squares[..., 2 * lo : 2 * hi].mT, out=out_rows[..., a:b, :])
        else:
            out_rows[..., a:b, :].zero_()
    del squares
    log_spec = full.clamp_(min=1e-10).log10_()
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
    resample_backend: Backend = "soxr",
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
        resample_backend: ``"soxr"`` or ``"torchaudio"`` (see :mod:`afnext.audio.resample`).

    Returns:
        ``features``: ``(W, n_mels, T)`` float32, ``T = window_seconds * 100`` (3000 for 30 s).
        ``mask``: ``(W, T)`` bool, True on frames that hold real audio; window ``w`` has
        ``ceil(real_samples_w / 160)`` of them.

    Raises:
        AudioError: If ``wave`` is not 1-D, is empty, is longer than ``max_seconds``, or holds NaN or inf.
    """
    # Check shape and length before resampling, so bad input fails fast and cheaply.
    check_mono(wave)
    check_duration(wave.shape[0], sampling_rate, max_seconds, source="<waveform>")
    wave = resample(wave.to(torch.float32), sampling_rate, SAMPLING_RATE, backend=resample_backend)
    per_window, lengths = window_lengths(
        wave, sampling_rate=SAMPLING_RATE, window_seconds=window_seconds, max_seconds=max_seconds
    )
    # The full windows are a view of the waveform; only a partial last window is copied (zero-padded), where
    # split_windows copies the whole waveform.
    full = wave.shape[0] // per_window
    parts = [wave[: full * per_window].view(full, per_window)] if full else []
    tail = wave[full * per_window :]
    if full < lengths.shape[0]:
        parts.append(torch.nn.functional.pad(tail, (0, per_window - tail.shape[0]))[None])
    features = _log_mel(
        parts,
        n_mels=n_mels,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        sampling_rate=SAMPLING_RATE,
        workers=None,
        source="<waveform>",
        last_samples=tail.shape[0] if full < lengths.shape[0] else None,
    )
    return features, frame_mask(lengths, HOP_LENGTH, features.shape[-1])
