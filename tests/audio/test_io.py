"""load_audio: formats, inputs, downmix, resampling and every way audio can be bad."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import torch

from afnext.audio import describe_source, load_audio
from afnext.errors import AudioError

SR = 16000
# (extension, soundfile format, subtype, lossless)
FORMATS = [
    ("wav", "WAV", "PCM_16", True),
    ("flac", "FLAC", "PCM_16", True),
    ("ogg", "OGG", "VORBIS", False),
    ("mp3", "MP3", "MPEG_LAYER_III", False),
]


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_hz(wave: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(wave.double() * torch.hann_window(wave.shape[0], dtype=torch.float64))
    return float(spectrum.abs().argmax()) * rate / wave.shape[0]


@pytest.mark.parametrize(("ext", "fmt", "subtype", "lossless"), FORMATS)
def test_formats_by_path_bytes_and_file_object(tmp_path, ext, fmt, subtype, lossless):
    if fmt not in soundfile.available_formats():
        pytest.skip(f"this libsndfile ({soundfile.__libsndfile_version__}) cannot write {fmt}")
    data = tone(440.0, 2.0, SR)
    path = tmp_path / f"tone.{ext}"
    soundfile.write(path, data, SR, format=fmt, subtype=subtype)

    by_path = load_audio(path)
    by_str = load_audio(str(path))
    by_bytes = load_audio(path.read_bytes())
    with open(path, "rb") as f:
        by_file = load_audio(f)

    assert by_path.dtype == torch.float32 and by_path.dim() == 1
    for other in (by_str, by_bytes, by_file):
        assert torch.equal(other, by_path)
    if lossless:
        assert by_path.shape[0] == data.shape[0]
        assert torch.allclose(by_path, torch.from_numpy(data), atol=1 / 2**15)
    else:  # lossy codecs add encoder delay / padding of a few ms at most
        assert abs(by_path.shape[0] - data.shape[0]) < 0.1 * SR
    assert dominant_hz(by_path, SR) == pytest.approx(440.0, abs=1.0)


def test_stereo_and_six_channels_are_averaged(write_audio):
    left, right = tone(300.0, 1.0, SR), tone(900.0, 1.0, SR, amp=0.25)
    stereo = write_audio("stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    assert torch.allclose(load_audio(stereo), torch.from_numpy((left + right) / 2), atol=1e-7)

    rng = np.random.default_rng(6)
    six = (0.1 * rng.standard_normal((SR, 6))).astype(np.float32)  # (frames, channels)
    path = write_audio("six.wav", six, subtype="FLOAT")
    assert torch.allclose(load_audio(path), torch.from_numpy(six.mean(axis=1)), atol=1e-7)


def test_resampling_keeps_the_pitch(write_audio):
    path = write_audio("tone44k.wav", tone(1000.0, 3.0, 44100), rate=44100, subtype="FLOAT")
    wave = load_audio(path)
    assert wave.shape[0] == 48000  # ceil(132300 * 16000 / 44100)
    assert dominant_hz(wave, SR) == pytest.approx(1000.0, abs=1.0)
    assert wave.abs().max().item() == pytest.approx(0.5, abs=0.01)  # no gain change

    up = load_audio(path, sampling_rate=48000)
    assert up.shape[0] == 144000
    assert dominant_hz(up, 48000) == pytest.approx(1000.0, abs=1.0)

    same = write_audio("tone16k.wav", tone(1000.0, 1.0, SR), subtype="FLOAT")
    assert torch.equal(load_audio(same), torch.from_numpy(tone(1000.0, 1.0, SR)))


def test_describe_source():
    assert describe_source(b"abc") == "<bytes, 3 bytes>"
    assert describe_source("a/b.wav") == "a/b.wav"
    assert describe_source(io.BytesIO(b"")) == "<file object>"


# ---- bad input: each is an AudioError that names the source and what is wrong ----


def expect_error(source, match: str, **kwargs) -> AudioError:
    with pytest.raises(AudioError, match=match) as info:
        load_audio(source, **kwargs)
    name = describe_source(source)
    assert info.value.source == name
    assert str(info.value).startswith(f"{name}: ")
    return info.value


def test_missing_file_and_directory(tmp_path):
    expect_error(tmp_path / "nope.wav", "no such file")
    expect_error(tmp_path, "not a regular file")


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    expect_error(path, r"could not decode audio .*re-encode it")
    expect_error(path.read_bytes(), r"could not decode audio")


def test_empty_file_and_header_without_frames(tmp_path, write_audio):
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    expect_error(empty, r"empty \(0 bytes\)")
    expect_error(b"", r"empty \(0 bytes\)")

    no_frames = write_audio("no_frames.wav", np.zeros((0, 2), dtype=np.float32))
    error = expect_error(no_frames, r"no samples \(valid header, 0 frames, 2 channel")
    assert "no_frames.wav" in str(error)


def test_silence_shorter_than_one_hop(write_audio):
    short = write_audio("short.wav", np.zeros(100, dtype=np.float32))
    expect_error(short, r"6.25 ms long .* shorter than one 10 ms feature hop \(160 samples")
    # 79 frames at 8 kHz resample to 158 samples at 16 kHz: still too short.
    expect_error(write_audio("short8k.wav", np.zeros(79, np.float32), 8000), "feature hop")
    # Exactly one hop is enough.
    assert load_audio(write_audio("hop.wav", np.zeros(160, dtype=np.float32))).shape == (160,)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(write_audio, bad):
    data = tone(440.0, 1.0, SR)
    data[8000] = bad
    path = write_audio("bad.wav", data, subtype="FLOAT")
    expect_error(path, r"1 of 16000 frames hold NaN or infinite samples \(first at 0.500 s\)")
    expect_error(path.read_bytes(), "NaN or infinite")


def test_over_the_length_limit(write_audio):
    path = write_audio("long.wav", np.zeros(SR * 3, dtype=np.float32))
    error = expect_error(path, r"3.00 s long", max_seconds=2.5)
    message = str(error)
    assert "limit of 2.5 s" in message
    assert "`max_seconds` argument" in message and "`data.max_audio_seconds`" in message
    # At the limit, and with no limit, it loads.
    assert load_audio(path, max_seconds=3).shape == (SR * 3,)
    assert load_audio(path, max_seconds=None).shape == (SR * 3,)


def test_wrong_input_type():
    with pytest.raises(TypeError, match="path, bytes or a binary file object"):
        load_audio(12345)  # type: ignore[arg-type]
