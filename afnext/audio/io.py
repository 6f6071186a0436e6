"""Decode audio files (or bytes) into checked mono waveforms.

Decoding goes through ``soundfile`` (libsndfile: wav, flac, ogg/vorbis/opus, mp3, aiff, ...), not
``torchaudio.load``, which needs torchcodec and FFmpeg. Every way audio can be unusable (missing,
undecodable, empty, too short, non-finite, too long) is an :class:`~afnext.errors.AudioError`
naming the source and what to do; nothing is repaired silently.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from afnext.audio.resample import Backend, resample
from afnext.audio.windows import (
    HOP_LENGTH,
    MAX_SECONDS,
    SAMPLING_RATE,
    check_duration,
    check_mono,
)
from afnext.errors import AudioError, UsageError

__all__ = ["AudioSource", "check_waveform", "describe_source", "load_audio"]

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO
"""What :func:`load_audio` accepts: a path, the encoded file's bytes, or a binary file object."""

# The shortest audio accepted is one feature hop (10 ms, 160 samples at 16 kHz): anything
# shorter cannot fill a single log-mel frame.
_HOP_SECONDS = HOP_LENGTH / SAMPLING_RATE


def describe_source(source: AudioSource) -> str:
    """Name an audio source for error messages.

    Args:
        source: A path, bytes-like object or binary file object.

    Returns:
        The path as given, ``"<bytes, N bytes>"`` for in-memory data, or the file object's
        ``name`` (``"<file object>"`` if it has none).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<bytes, {memoryview(source).nbytes} bytes>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, (str, os.PathLike)) else "<file object>"


def _open_target(source: AudioSource, where: str) -> str | BinaryIO:
    """What to hand to ``soundfile``: an existing file's path, or a binary stream."""
    empty = AudioError(
        "the file is empty (0 bytes).", where, fix="Re-export it or drop it from the manifest."
    )
    if isinstance(source, (bytes, bytearray, memoryview)):
        if memoryview(source).nbytes == 0:
            raise empty
        return io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(
                "no such file. Check the path (relative paths resolve against "
                f"{Path.cwd()}) or the manifest entry that named it.",
                source=where,
            )
        if not path.is_file():
            raise AudioError("is not a regular file; pass the path of an audio file.", where)
        if path.stat().st_size == 0:
            raise empty
        return os.fspath(path)
    if hasattr(source, "read"):
        return source
    raise UsageError(
        f"load_audio expects a path, bytes or a binary file object, got {type(source).__name__}."
    )


def _decode(
    target: str | BinaryIO, where: str, max_seconds: float | None
) -> tuple[np.ndarray, int]:
    """Decode all frames as float32 ``(frames, channels)``, checking the length from the header."""
    import soundfile  # lazy: loads libsndfile

    try:
        with soundfile.SoundFile(target) as f:
            rate = f.samplerate
            # Reject over-long audio from the header, before decoding (and allocating) all of it.
            check_duration(f.frames, rate, max_seconds, source=where)
            data = f.read(dtype="float32", always_2d=True)  # (frames, channels)
    except (soundfile.SoundFileError, RuntimeError) as exc:
        raise AudioError(
            f"could not decode audio ({exc}). The file is corrupt, truncated or in a format "
            "libsndfile does not read (it reads wav, flac, ogg/vorbis/opus, mp3, aiff, ...); "
            "re-encode it, e.g. `ffmpeg -i IN -ar 16000 -ac 1 OUT.flac`.",
            source=where,
        ) from exc
    # Some formats (mp3) only estimate the header frame count; check what was really decoded.
    check_duration(data.shape[0], rate, max_seconds, source=where)
    return data, rate


def load_audio(
    path_or_bytes: AudioSource,
    sampling_rate: int = SAMPLING_RATE,
    max_seconds: float | None = MAX_SECONDS,
    resample_backend: Backend = "soxr",
) -> torch.Tensor:
    """Load an audio file as a checked mono float32 waveform at ``sampling_rate``.

    Channels are averaged to mono; other sample rates are resampled with :func:`afnext.audio.resample`
    (libsoxr by default, or torchaudio's windowed sinc).

    Args:
        path_or_bytes: A path (``str`` / ``os.PathLike``), the encoded file as ``bytes``, or a
            binary file object positioned at the start of the file.
        sampling_rate: Sample rate of the returned waveform in Hz.
        max_seconds: Longest audio accepted, in seconds; ``None`` means no limit. Defaults to
            1800 s (30 min, 60 windows of 30 s).
        resample_backend: ``"soxr"`` or ``"torchaudio"`` (see :mod:`afnext.audio.resample`).

    Returns:
        ``(S,)`` float32 mono waveform, ``S >= sampling_rate / 100`` (at least one 10 ms hop).

    Raises:
        AudioError: If the file is missing, cannot be decoded, holds no samples, is shorter than
            one 10 ms feature hop, holds NaN or infinite samples, or is longer than
            ``max_seconds``. The message names the file (or ``"<bytes, N bytes>"``).
        UsageError: If ``path_or_bytes`` is none of the accepted types (a ``TypeError``).
    """
    where = describe_source(path_or_bytes)
    data, rate = _decode(_open_target(path_or_bytes, where), where, max_seconds)
    frames, channels = data.shape
    if frames == 0:
        raise AudioError(
            f"the audio holds no samples (valid header, 0 frames, {channels} channel(s)).",
            source=where,
            fix="Re-export it or drop it from the manifest.",
        )
    if not np.isfinite(data).all():
        bad = ~np.isfinite(data).all(axis=1)  # (frames,)
        first = int(np.argmax(bad))
        raise AudioError(
            f"{int(bad.sum())} of {frames} frames hold NaN or infinite samples (first at "
            f"{first / rate:.3f} s); the file is damaged or was written from broken float data.",
            source=where,
            fix="Re-export it or drop it from the manifest.",
        )

    # soundfile gives frame-major (frames, channels); averaging the channels downmixes to mono.
    wave = torch.from_numpy(data)  # (S, C)
    wave = wave[:, 0] if channels == 1 else wave.mean(dim=1)  # (S,)
    wave = resample(wave, rate, sampling_rate, backend=resample_backend)

    min_samples = math.ceil(_HOP_SECONDS * sampling_rate)
    if wave.shape[0] < min_samples:
        raise AudioError(
            f"audio is {frames / rate * 1000:.2f} ms long ({frames} frames at {rate} Hz), shorter "
            f"than one 10 ms feature hop ({min_samples} samples at {sampling_rate} Hz), too short "
            "to yield a single feature frame.",
            source=where,
            fix="Use a longer clip or drop it from the manifest.",
        )
    return wave


def check_waveform(
    wave: torch.Tensor,
    sampling_rate: int = SAMPLING_RATE,
    *,
    max_seconds: float | None = MAX_SECONDS,
    source: str = "<waveform>",
) -> torch.Tensor:
    """Check an in-memory waveform the way :func:`load_audio` checks a file.

    Args:
        wave: ``(S,)`` mono waveform at ``sampling_rate``.
        sampling_rate: Its sample rate in Hz.
        max_seconds: Longest audio accepted; ``None`` means no limit.
        source: What the waveform came from, for messages.

    Returns:
        ``wave`` as float32.

    Raises:
        AudioError: Not 1-D, empty, shorter than one 10 ms hop, NaN / infinite samples, or too long.
    """
    check_mono(wave)
    wave = wave.to(torch.float32)
    if wave.shape[0] == 0:
        raise AudioError("the waveform holds no samples.", source=source)
    if not torch.isfinite(wave).all():
        bad = ~torch.isfinite(wave)
        first = int(bad.nonzero()[0, 0])
        raise AudioError(
            f"{int(bad.sum())} of {wave.shape[0]} samples are NaN or infinite (first at "
            f"{first / sampling_rate:.3f} s); clean the array before passing it.",
            source=source,
        )
    check_duration(wave.shape[0], sampling_rate, max_seconds, source=source)
    min_samples = math.ceil(_HOP_SECONDS * sampling_rate)
    if wave.shape[0] < min_samples:
        raise AudioError(
            f"audio is {wave.shape[0]} samples at {sampling_rate} Hz, shorter than one 10 ms "
            f"feature hop ({min_samples} samples); use a longer clip.",
            source=source,
        )
    return wave
