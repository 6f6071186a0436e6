"""Split a waveform into the fixed-length windows the audio encoder sees.

AF-Next (like AF3) encodes audio as non-overlapping 30 s windows, each encoded on its own; the
last window is zero-padded and its padded tail masked out. At most 1800 s (60 windows) are
accepted. This mirrors the chunking in ``transformers/models/audioflamingo3/
processing_audioflamingo3.py`` (``_process_audio``), except that audio over the limit is an
error here instead of being truncated with a warning.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from afnext.errors import AudioError, AudioTooLongError, ConfigError

__all__ = [
    "HOP_LENGTH",
    "MAX_SECONDS",
    "SAMPLING_RATE",
    "WINDOW_SECONDS",
    "AudioWindows",
    "check_duration",
    "check_mono",
    "frame_mask",
    "num_windows",
    "split_windows",
    "valid_frames",
    "window_lengths",
    "window_samples",
]

SAMPLING_RATE = 16000
"""Sample rate (Hz) every afnext encoder expects."""
HOP_LENGTH = 160
"""Feature hop in samples at :data:`SAMPLING_RATE` (10 ms): one log-mel frame per hop."""
WINDOW_SECONDS = 30.0
"""Length of one encoder window (Whisper's 30 s receptive field)."""
MAX_SECONDS = 1800.0
"""Longest audio accepted by default: 30 min = 60 windows of 30 s (AF-Next)."""


def check_duration(
    num_samples: int, sampling_rate: int, max_seconds: float | None, source: str | None
) -> None:
    """Raise if audio is longer than the configured limit.

    Args:
        num_samples: Length of the audio in samples.
        sampling_rate: Its sample rate in Hz.
        max_seconds: The limit in seconds; ``None`` means no limit.
        source: What the audio came from (file name, ``"<bytes, N bytes>"``), for the message.

    Raises:
        AudioError: If ``num_samples / sampling_rate > max_seconds``.
    """
    if max_seconds is None or num_samples <= max_seconds * sampling_rate:
        return
    raise AudioTooLongError(
        f"audio is {num_samples / sampling_rate:.2f} s long ({num_samples} samples at "
        f"{sampling_rate} Hz), over the limit of {max_seconds:g} s.",
        source=source,
        fix="Trim or split it, or raise the limit with the `max_seconds` argument (None disables it); in "
        "training it is `data.max_audio_seconds`, or a curriculum stage's `max_audio_seconds`.",
        seconds=num_samples / sampling_rate,
        max_seconds=float(max_seconds),
    )


def check_mono(wave: torch.Tensor) -> None:
    """Raise unless ``wave`` is a 1-D ``(S,)`` mono waveform.

    Raises:
        AudioError: If ``wave`` has any other number of dimensions.
    """
    if wave.dim() != 1:
        raise AudioError(
            f"expected a 1-D mono waveform, got shape {tuple(wave.shape)}; downmix channels first "
            "(e.g. wave.mean(0)) or load the file with afnext.audio.load_audio.",
            source="<waveform>",
        )


def window_samples(window_seconds: float, sampling_rate: int = SAMPLING_RATE) -> int:
    """Number of samples in one window.

    Args:
        window_seconds: Window length in seconds.
        sampling_rate: Sample rate in Hz.

    Returns:
        ``window_seconds * sampling_rate`` as an int.

    Raises:
        ValueError: If that is not a positive whole number of samples.
    """
    n = window_seconds * sampling_rate
    if window_seconds <= 0 or n != round(n):
        raise ConfigError(
            f"window_seconds={window_seconds} must be positive and give a whole number of samples "
            f"at {sampling_rate} Hz; use e.g. 30.0."
        )
    return round(n)


def num_windows(num_samples: int, samples_per_window: int) -> int:
    """How many windows ``num_samples`` fill: ``ceil(num_samples / samples_per_window)``, at least 1.

    Matches ``n_win = max(1, ceil(n_samples / window_size))`` in the AF3 processor.
    """
    return max(1, -(-num_samples // samples_per_window))


def valid_frames(lengths: torch.Tensor, hop_length: int, num_frames: int) -> torch.Tensor:
    """Number of real (not padding) feature frames per window.

    ``WhisperFeatureExtractor(return_attention_mask=True)`` takes every ``hop_length``-th entry of
    the sample mask, so a window holding ``L`` real samples has ``ceil(L / hop_length)`` valid
    frames, capped at the ``num_frames`` the window yields.

    Args:
        lengths: ``(W,)`` int64, real samples per window.
        hop_length: Feature hop in samples.
        num_frames: Frames per full window.

    Returns:
        ``(W,)`` int64 valid frame counts.
    """
    return torch.div(lengths + hop_length - 1, hop_length, rounding_mode="floor").clamp(
        max=num_frames
    )


class AudioWindows(NamedTuple):
    """A waveform cut into equal windows, the last one zero-padded.

    Attributes:
        samples: ``(W, N)`` float32 window samples, ``N`` = samples per window.
        lengths: ``(W,)`` int64, how many samples of each window are real audio.
    """

    samples: torch.Tensor
    lengths: torch.Tensor

    @property
    def sample_mask(self) -> torch.Tensor:
        """``(W, N)`` bool, True where the sample is real audio, False on the padded tail."""
        positions = torch.arange(self.samples.shape[-1], device=self.samples.device)
        return positions[None, :] < self.lengths[:, None]  # (W, N)

    def frame_mask(self, hop_length: int = HOP_LENGTH) -> torch.Tensor:
        """Per-frame mask of the log-mel features of these windows.

        Args:
            hop_length: Feature hop in samples.

        Returns:
            ``(W, N // hop_length)`` bool, True for frames that hold real audio (see
            :func:`valid_frames`).
        """
        return frame_mask(self.lengths, hop_length, self.samples.shape[-1] // hop_length)


def frame_mask(lengths: torch.Tensor, hop_length: int, num_frames: int) -> torch.Tensor:
    """``(W, num_frames)`` bool, True for the frames of each window that hold real audio.

    Args:
        lengths: ``(W,)`` int64, real samples per window.
        hop_length: Feature hop in samples.
        num_frames: Frames per full window.
    """
    valid = valid_frames(lengths, hop_length, num_frames)  # (W,)
    positions = torch.arange(num_frames, device=lengths.device)
    return positions[None, :] < valid[:, None]  # (W, T)


def split_windows(
    wave: torch.Tensor,
    *,
    sampling_rate: int = SAMPLING_RATE,
    window_seconds: float = WINDOW_SECONDS,
    max_seconds: float | None = MAX_SECONDS,
) -> AudioWindows:
    """Cut a mono waveform into non-overlapping windows, zero-padding the last.

    Args:
        wave: ``(S,)`` mono waveform, ``S >= 1``.
        sampling_rate: Sample rate of ``wave`` in Hz.
        window_seconds: Window length in seconds (30 for Whisper-style encoders).
        max_seconds: Longest audio accepted; ``None`` means no limit.

    Returns:
        :class:`AudioWindows` with ``samples`` ``(W, N)`` (same dtype and device as ``wave``)
        and ``lengths`` ``(W,)``, where ``N = window_seconds * sampling_rate`` and
        ``W = max(1, ceil(S / N))``.

    Raises:
        AudioError: If ``wave`` is not 1-D, is empty, or is longer than ``max_seconds``.
    """
    per_window, lengths = window_lengths(
        wave, sampling_rate=sampling_rate, window_seconds=window_seconds, max_seconds=max_seconds
    )
    count = lengths.shape[0]
    # One copy: pad the tail with zeros and view the flat buffer as windows.
    samples = torch.nn.functional.pad(wave, (0, count * per_window - wave.shape[0]))
    return AudioWindows(samples.view(count, per_window), lengths)  # (W, N)


def window_lengths(
    wave: torch.Tensor,
    *,
    sampling_rate: int = SAMPLING_RATE,
    window_seconds: float = WINDOW_SECONDS,
    max_seconds: float | None = MAX_SECONDS,
) -> tuple[int, torch.Tensor]:
    """The checks and layout of :func:`split_windows` without building the windows.

    Returns:
        Samples per window ``N`` and ``(W,)`` int64 real samples per window.

    Raises:
        AudioError: As :func:`split_windows`.
    """
    check_mono(wave)
    total = wave.shape[0]
    if total == 0:
        raise AudioError("the waveform is empty (0 samples).", source="<waveform>")
    check_duration(total, sampling_rate, max_seconds, source="<waveform>")
    per_window = window_samples(window_seconds, sampling_rate)
    count = num_windows(total, per_window)
    starts = torch.arange(count, device=wave.device) * per_window  # (W,)
    return per_window, (total - starts).clamp(max=per_window)
