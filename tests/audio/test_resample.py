"""resample: one checked entry point, soxr (default) and torchaudio backends."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from afnext.audio import resample
from afnext.errors import ConfigError


def _torchaudio_usable() -> bool:
    if importlib.util.find_spec("torchaudio") is None:
        return False
    try:
        import torchaudio.functional  # noqa: F401
    except (ImportError, OSError):  # PyPI's wheel beside a CPU build of torch
        return False
    return True


BACKENDS = [
    "soxr",
    pytest.param(
        "torchaudio",
        marks=pytest.mark.skipif(
            not _torchaudio_usable(), reason="torchaudio not installed or needs CUDA torch"
        ),
    ),
]


def test_equal_rates_return_the_input():
    wave = torch.randn(1000)
    assert resample(wave, 16000, 16000) is wave


@pytest.mark.parametrize("backend", BACKENDS)
def test_lengths_batch_dims_and_dtype(backend):
    wave = torch.randn(2, 3, 44100)  # (batch, channels, samples)
    out = resample(wave, 44100, 16000, backend=backend)
    assert out.shape == (2, 3, 16000)
    assert out.dtype == torch.float32
    assert torch.allclose(out[1, 2], resample(wave[1, 2], 44100, 16000, backend=backend), atol=1e-6)
    assert resample(wave.double(), 44100, 16000, backend=backend).dtype == torch.float64


@pytest.mark.parametrize("backend", BACKENDS)
def test_band_limited_signal_survives_a_round_trip(backend):
    t = torch.arange(48000, dtype=torch.float64) / 16000
    wave = torch.sin(2 * torch.pi * 440.0 * t)
    back = resample(resample(wave, 16000, 48000, backend=backend), 48000, 16000, backend=backend)
    # Away from the edges, where the filter runs off the signal.
    assert torch.allclose(back[1000:-1000], wave[1000:-1000], atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_content_above_the_new_nyquist_is_removed(backend):
    t = torch.arange(44100, dtype=torch.float64) / 44100
    tone = torch.sin(2 * torch.pi * 1000.0 * t)
    alias = torch.sin(2 * torch.pi * 12000.0 * t)  # above 8 kHz: must not fold back to 4 kHz
    out = resample(tone + alias, 44100, 16000, backend=backend)
    ref = resample(tone, 44100, 16000, backend=backend)
    assert (out - ref)[500:-500].abs().max() < 0.02


@pytest.mark.skipif(not _torchaudio_usable(), reason="torchaudio not installed or needs CUDA torch")
def test_backends_agree_on_band_limited_audio():
    t = torch.arange(22050 * 2, dtype=torch.float32) / 22050
    wave = torch.sin(2 * torch.pi * 300.0 * t) + 0.5 * torch.sin(2 * torch.pi * 2500.0 * t)
    a = resample(wave, 22050, 16000, backend="soxr")
    b = resample(wave, 22050, 16000, backend="torchaudio")
    n = min(a.numel(), b.numel())
    assert (a[500 : n - 500] - b[500 : n - 500]).abs().max() < 5e-3


@pytest.mark.parametrize(("orig", "new"), [(0, 16000), (16000, -1), (22050.5, 16000)])
def test_bad_rates(orig, new):
    with pytest.raises(ValueError, match="positive whole number"):
        resample(torch.zeros(10), orig, new)


def test_unknown_backend_names_the_choices():
    with pytest.raises(ConfigError, match="soxr, torchaudio"):
        resample(torch.zeros(10), 8000, 16000, backend="librosa")


def test_the_backend_reaches_every_resampling_entry_point(tmp_path):
    """load_audio, whisper_features, the processor and the data module pass their backend on (an unknown
    one fails where it is used, naming the choices)."""
    import soundfile

    from afnext.audio import load_audio, whisper_features
    from afnext.data.datamodule import AudioDataModule
    from afnext.data.processor import AudioProcessor
    from afnext.encoders.whisper import AFWhisperEncoder
    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR

    clip = tmp_path / "clip.wav"
    soundfile.write(clip, 0.1 * torch.randn(44100).numpy(), 44100)
    with pytest.raises(ConfigError, match="'librosa' is unknown"):
        load_audio(clip, resample_backend="librosa")
    with pytest.raises(ConfigError, match="'librosa' is unknown"):
        whisper_features(torch.zeros(44100), 44100, resample_backend="librosa")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    with pytest.raises(ConfigError, match="resample_backend='librosa'"):
        AudioProcessor(tokenizer, AFWhisperEncoder.output_lengths, resample_backend="librosa")
    with pytest.raises(ConfigError, match=r"data\.resample_backend='librosa'"):
        AudioDataModule(train=[str(clip)], resample_backend="librosa")
    data = AudioDataModule(train=[str(clip)], resample_backend="torchaudio")
    proc = AudioProcessor(tokenizer, AFWhisperEncoder.output_lengths)
    data.attach_processor(proc)
    assert proc.resample_backend == "torchaudio"


@pytest.mark.skipif(not _torchaudio_usable(), reason="torchaudio not installed or needs CUDA torch")
def test_torchaudio_backend_end_to_end(tmp_path):
    """A 44.1 kHz stereo file through load_audio and whisper_features with torchaudio equals torchaudio's own
    resample of the downmix."""
    import soundfile
    import torchaudio.functional as F

    from afnext.audio import load_audio, whisper_features

    stereo = 0.1 * torch.randn(44100, 2)
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, stereo.numpy(), 44100, subtype="FLOAT")
    want = F.resample(stereo.mean(dim=1), 44100, 16000)
    got = load_audio(clip, resample_backend="torchaudio")
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    features, _ = whisper_features(stereo.mean(dim=1), 44100, resample_backend="torchaudio")
    torch.testing.assert_close(features, whisper_features(want)[0], rtol=0, atol=1e-5)
