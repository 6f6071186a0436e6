"""Sample-rate conversion, through ``torchaudio.functional.resample``.

One function so that file loading (:func:`afnext.audio.load_audio`) and feature extraction
(:func:`afnext.audio.whisper_features`) resample identically, and so that tests can resample a
reference path the same way.
"""

from __future__ import annotations

import torch

__all__ = ["resample"]


def resample(wave: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Resample audio with torchaudio's windowed-sinc resampler (its default settings).

    Nothing is cached: the sinc kernel is rebuilt per call (cheap next to the convolution), so the
    function is safe in forked and spawned data-loader workers alike.

    Args:
        wave: ``(..., S)`` float waveform; the last dimension is time.
        orig_freq: Sample rate of ``wave`` in Hz.
        new_freq: Wanted sample rate in Hz.

    Returns:
        ``(..., S')`` waveform at ``new_freq``, ``S' = ceil(S * new_freq / orig_freq)``;
        ``wave`` itself when the rates are equal.

    Raises:
        ValueError: If a rate is not a positive integer.
    """
    for name, rate in (("orig_freq", orig_freq), ("new_freq", new_freq)):
        if int(rate) != rate or rate <= 0:
            raise ValueError(f"{name}={rate!r} must be a positive whole number of Hz.")
    if orig_freq == new_freq:
        return wave
    # Lazy: torchaudio is slow to import and only needed when rates differ.
    import torchaudio.functional

    return torchaudio.functional.resample(wave, int(orig_freq), int(new_freq))
