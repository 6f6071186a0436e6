"""Feature front ends: what an encoder wants of the audio, from waveform to the windows it encodes.

An encoder owns its front end (``encoder.front_end``, see :mod:`afnext.encoders.base`); the processor, the
dataset and the model ask it for the sampling rate, the window length, the feature frames per second (the unit
of the frame masks and of ``encoder.output_lengths``) and the features themselves, instead of branching on a
kind of input. A new kind of features (another filterbank, another hop, a codec, raw audio at another rate) is a
new front end, in a plugin or in afnext, with no change elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from afnext.audio.features import whisper_features
from afnext.audio.windows import (
    HOP_LENGTH,
    MAX_SECONDS,
    SAMPLING_RATE,
    WINDOW_SECONDS,
    split_windows,
)

__all__ = ["FrontEnd", "LogMelFrontEnd", "WaveformFrontEnd"]


@runtime_checkable
class FrontEnd(Protocol):
    """Turns one mono waveform into the windows an encoder takes.

    Attributes:
        sampling_rate: Rate (Hz) the waveform must have (the processor loads and resamples audio to it).
        window_seconds: Seconds of audio per window (one encoder input).
        frame_rate: Feature frames per second: the unit of the mask and of ``encoder.output_lengths``.
    """

    sampling_rate: int
    window_seconds: float
    frame_rate: float

    def __call__(
        self, wave: torch.Tensor, *, max_seconds: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S,)`` waveform -> ``features (W, C, F)`` and ``mask (W, F)`` (True on frames of real audio)."""
        ...


@dataclass(frozen=True)
class LogMelFrontEnd:
    """Whisper's log-mel spectrogram (AF-Whisper, Whisper): 16 kHz, 10 ms hop, ``n_mels`` bands, 30 s windows;
    equal to ``WhisperFeatureExtractor`` (:func:`afnext.audio.whisper_features`)."""

    n_mels: int = 128
    window_seconds: float = WINDOW_SECONDS
    sampling_rate: int = SAMPLING_RATE

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / HOP_LENGTH

    def __call__(
        self, wave: torch.Tensor, *, max_seconds: float | None = MAX_SECONDS
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return whisper_features(
            wave,
            self.sampling_rate,
            n_mels=self.n_mels,
            window_seconds=self.window_seconds,
            max_seconds=max_seconds,
        )


@dataclass(frozen=True)
class WaveformFrontEnd:
    """Raw samples (HuBERT, WavLM, wav2vec 2.0): windows of ``window_seconds``, features ``(W, 1, samples)``."""

    window_seconds: float = WINDOW_SECONDS
    sampling_rate: int = SAMPLING_RATE

    @property
    def frame_rate(self) -> float:
        return float(self.sampling_rate)

    def __call__(
        self, wave: torch.Tensor, *, max_seconds: float | None = MAX_SECONDS
    ) -> tuple[torch.Tensor, torch.Tensor]:
        windows = split_windows(
            wave,
            sampling_rate=self.sampling_rate,
            window_seconds=self.window_seconds,
            max_seconds=max_seconds,
        )
        return windows.samples.unsqueeze(1), windows.sample_mask  # (W, 1, S), (W, S)
