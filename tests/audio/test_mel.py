"""The Slaney mel filter bank equals transformers' (and so librosa's)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from afnext.audio import mel_filter_bank
from afnext.audio.mel import hertz_to_mel, mel_to_hertz


@pytest.mark.parametrize("n_mels", [80, 128])
def test_matches_transformers_mel_filter_bank(n_mels):
    from transformers.audio_utils import mel_filter_bank as hf_mel_filter_bank

    reference = hf_mel_filter_bank(
        num_frequency_bins=201,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=16000,
        norm="slaney",
        mel_scale="slaney",
    )  # (201, n_mels) float64
    ours = mel_filter_bank(n_mels, dtype=torch.float64)
    assert ours.shape == (n_mels, 201)
    np.testing.assert_allclose(ours.numpy(), reference.T, rtol=0, atol=1e-12)


def test_cached_per_device_and_dtype():
    a = mel_filter_bank(128)
    assert a is mel_filter_bank(128)
    assert a.dtype == torch.float32
    assert mel_filter_bank(128, dtype=torch.float64) is not a


def test_mel_scale_round_trip_and_knee():
    hz = torch.tensor([0.0, 500.0, 1000.0, 4000.0, 8000.0], dtype=torch.float64)
    mels = hertz_to_mel(hz)
    assert mels[2].item() == pytest.approx(15.0)  # linear below 1 kHz, log above
    assert mels[1].item() == pytest.approx(7.5)
    assert torch.allclose(mel_to_hertz(mels), hz)
