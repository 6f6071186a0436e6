"""resample: torchaudio's resampler behind one checked entry point."""

from __future__ import annotations

import pytest
import torch

from afnext.audio import resample


def test_equal_rates_return_the_input():
    wave = torch.randn(1000)
    assert resample(wave, 16000, 16000) is wave


def test_lengths_and_batch_dims():
    wave = torch.randn(2, 44100)  # (channels, samples)
    out = resample(wave, 44100, 16000)
    assert out.shape == (2, 16000)
    assert torch.allclose(out[1], resample(wave[1], 44100, 16000))


def test_band_limited_signal_survives_a_round_trip():
    t = torch.arange(48000, dtype=torch.float64) / 16000
    wave = torch.sin(2 * torch.pi * 440.0 * t)
    back = resample(resample(wave, 16000, 48000), 48000, 16000)
    # Away from the edges, where the sinc kernel runs off the signal.
    assert torch.allclose(back[1000:-1000], wave[1000:-1000], atol=1e-3)


@pytest.mark.parametrize(("orig", "new"), [(0, 16000), (16000, -1), (22050.5, 16000)])
def test_bad_rates(orig, new):
    with pytest.raises(ValueError, match="positive whole number"):
        resample(torch.zeros(10), orig, new)
