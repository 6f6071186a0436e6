"""The audio front end: load and check audio, cut it into 30 s windows, compute log-mel features.

``load_audio`` decodes (soundfile), downmixes, resamples (torchaudio) and checks a file;
``whisper_features`` turns a waveform into per-window Whisper log-mel features and frame masks,
equal to what ``WhisperFeatureExtractor`` gives the AF3 processor; :mod:`afnext.audio.frontends` holds the feature
front ends encoders declare.
"""

from afnext.audio.features import N_FFT, log_mel_spectrogram, whisper_features
from afnext.audio.io import AudioSource, check_waveform, describe_source, load_audio
from afnext.audio.mel import mel_filter_bank
from afnext.audio.resample import resample
from afnext.audio.windows import (
    HOP_LENGTH,
    MAX_SECONDS,
    SAMPLING_RATE,
    WINDOW_SECONDS,
    AudioWindows,
    check_duration,
    check_mono,
    num_windows,
    split_windows,
    valid_frames,
    window_samples,
)

__all__ = [
    "HOP_LENGTH",
    "MAX_SECONDS",
    "N_FFT",
    "SAMPLING_RATE",
    "WINDOW_SECONDS",
    "AudioSource",
    "AudioWindows",
    "check_duration",
    "check_mono",
    "check_waveform",
    "describe_source",
    "load_audio",
    "log_mel_spectrogram",
    "mel_filter_bank",
    "num_windows",
    "resample",
    "split_windows",
    "valid_frames",
    "whisper_features",
    "window_samples",
]
