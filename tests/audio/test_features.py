"""Feature parity with transformers' WhisperFeatureExtractor on the AF3 processor's path."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile
import torch

from afnext.audio import (
    AudioWindows,
    load_audio,
    log_mel_spectrogram,
    mel_filter_bank,
    resample,
    split_windows,
    whisper_features,
)
from afnext.audio import features as features_module
from afnext.errors import AudioError

SR = 16000
ATOL = 1e-4
# Shorter than one window, exactly one window, several windows with a partial tail.
LENGTHS = [7.3, 30.0, pytest.param(65.5, marks=pytest.mark.slow)]


def assert_matches_reference(wave: np.ndarray, features, mask, af3_reference) -> None:
    ref = af3_reference(wave)
    ref_features, ref_mask = ref["input_features"], ref["input_features_mask"].bool()
    assert features.shape == ref_features.shape
    assert features.dtype == torch.float32
    assert mask.dtype == torch.bool
    for w in range(features.shape[0]):  # per window, so a failure names the window
        diff = (features[w] - ref_features[w]).abs().max().item()
        assert diff < ATOL, f"window {w}: max abs diff {diff:.2e}"
    assert torch.equal(mask, ref_mask)


@pytest.mark.parametrize("seconds", LENGTHS)
@pytest.mark.parametrize("signal", ["chirp", "harmonic", "noise"])
def test_matches_whisper_extractor_on_synthetic_signals(signal, seconds, signals, af3_reference):
    wave = getattr(signals, signal)(seconds)
    features, mask = whisper_features(torch.from_numpy(wave))
    assert_matches_reference(wave, features, mask, af3_reference)


@pytest.mark.parametrize("seconds", LENGTHS)
def test_matches_whisper_extractor_on_speech(speech_16k, seconds, signals, af3_reference):
    wave = signals.tile_to(speech_16k, seconds)
    features, mask = whisper_features(torch.from_numpy(wave))
    assert_matches_reference(wave, features, mask, af3_reference)
    # Speech has quiet gaps and loud vowels: the 80 dB floor must be active somewhere.
    assert (features == features.amin()).any() and features.std() > 0.1


@pytest.mark.parametrize(
    "rate", [8000, 44100, *(pytest.param(r, marks=pytest.mark.slow) for r in (22050, 48000))]
)
def test_other_sample_rates_resample_like_the_reference(rate, signals, af3_reference):
    wave = signals.harmonic(12.25, sr=rate) + signals.noise(12.25, sr=rate, seed=rate) * 0.1
    features, mask = whisper_features(torch.from_numpy(wave), sampling_rate=rate)
    reference_input = resample(torch.from_numpy(wave), rate, SR).numpy()
    assert_matches_reference(reference_input, features, mask, af3_reference)
    assert mask[0].sum().item() == -(-reference_input.shape[0] // 160)


@pytest.mark.parametrize(
    ("channels", "rate"),
    [
        (2, 44100),
        pytest.param(1, 16000, marks=pytest.mark.slow),
        pytest.param(6, 48000, marks=pytest.mark.slow),
    ],
)
def test_files_with_many_channels_match_after_downmix(
    channels, rate, signals, write_audio, af3_reference
):
    rng = np.random.default_rng(channels)
    seconds = 31.5  # two windows, so the downmix must reach the second one too
    tone_per_channel = [
        signals.harmonic(seconds, sr=rate, f0=110.0 * (c + 1)) for c in range(channels)
    ]
    data = np.stack(tone_per_channel, axis=1)  # (frames, channels)
    data += 0.01 * rng.standard_normal(data.shape).astype(np.float32)
    path = write_audio(f"{channels}ch.wav", data, rate, subtype="FLOAT")

    features, mask = whisper_features(load_audio(path))

    # The reference downmixes in numpy and resamples on its own.
    raw, raw_rate = soundfile.read(path, dtype="float32", always_2d=True)
    mono = torch.from_numpy(raw.mean(axis=1))
    reference_input = resample(mono, raw_rate, SR).numpy()
    assert features.shape[0] == 2
    assert_matches_reference(reference_input, features, mask, af3_reference)


def test_features_follow_the_signal():
    # A pure 1 kHz tone: its mel band must be the loudest one in every real frame.
    from afnext.audio import mel_filter_bank

    t = torch.arange(SR * 2) / SR
    features, mask = whisper_features(0.5 * torch.sin(2 * torch.pi * 1000.0 * t))
    bank = mel_filter_bank(128)  # (128, 201)
    band_1khz = int(bank[:, 1000 * 400 // SR].argmax())  # FFT bin 25 is exactly 1 kHz
    loudest = features[0, :, : int(mask[0].sum())].argmax(dim=0)  # (T_real,)
    # Reflect padding at the start makes the first two frames differ slightly; skip them.
    assert (loudest[2:-2] == band_1khz).all()
    # The padded tail is silence: clamped at the window floor.
    assert torch.allclose(features[0, :, 250:], features[0].amin())


def test_batched_windows_are_normalised_independently(signals):
    loud = torch.from_numpy(signals.harmonic(30.0)) * 2.0
    quiet = torch.from_numpy(signals.harmonic(30.0)) * 1e-3
    both = log_mel_spectrogram(torch.stack([loud, quiet]))  # (2, 128, 3000)
    alone = log_mel_spectrogram(quiet[None])
    # Same shape of the spectrum, so the per-window normalised features agree in both batches.
    assert torch.allclose(both[1], alone[0], atol=1e-5)
    assert both[0].amax() > both[1].amax()  # loud window peaks higher, (log10 peak + 4) / 4


def test_window_seconds_and_n_mels_are_honoured(signals):
    wave = torch.from_numpy(signals.chirp(25.0))
    features, mask = whisper_features(wave, n_mels=80, window_seconds=10.0)
    assert features.shape == (3, 80, 1000)
    assert mask.sum(-1).tolist() == [1000, 1000, 500]


def test_float64_input_is_computed_in_float32(signals):
    wave = torch.from_numpy(signals.noise(3.0)).double()
    features, _ = whisper_features(wave)
    reference, _ = whisper_features(wave.float())
    assert features.dtype == torch.float32
    assert torch.equal(features, reference)


def test_rejects_multichannel_empty_and_too_long_waveforms():
    with pytest.raises(AudioError, match=r"1-D mono waveform, got shape \(2, 1600\)"):
        whisper_features(torch.zeros(2, 1600))
    with pytest.raises(AudioError, match="empty"):
        whisper_features(torch.zeros(0))
    with pytest.raises(AudioError, match=r"over the limit of 60 s.*max_seconds"):
        whisper_features(torch.zeros(SR * 60 + 1), max_seconds=60)
    # The length check runs on the input rate, before resampling.
    with pytest.raises(AudioError, match=r"61.00 s long \(2928000 samples at 48000 Hz\)"):
        whisper_features(torch.zeros(48000 * 61), sampling_rate=48000, max_seconds=60)


def test_split_windows_feeds_the_same_features(signals):
    wave = torch.from_numpy(signals.noise(40.0))
    windows = split_windows(wave)
    assert isinstance(windows, AudioWindows)
    features, mask = whisper_features(wave)
    assert torch.equal(log_mel_spectrogram(windows.samples), features)
    assert torch.equal(windows.frame_mask(), mask)


def _dense_log_mel(windows: torch.Tensor, n_mels: int, n_fft: int = 400) -> torch.Tensor:
    """The textbook computation: torch.stft, |X|^2, the whole filter bank, Whisper's normalisation."""
    from afnext.audio.mel import mel_filter_bank

    spec = torch.stft(
        windows, n_fft, 160, window=torch.hann_window(n_fft), center=True, return_complex=True
    )[..., :-1]
    bank = mel_filter_bank(n_mels, n_fft=n_fft, sampling_rate=SR, device="cpu", dtype=torch.float32)
    mel = (bank @ spec.abs() ** 2).clamp(min=1e-10).log10()
    mel = torch.maximum(mel, mel.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (mel + 4.0) / 4.0


@pytest.mark.parametrize("n_mels", [80, 128])
def test_blocks_views_and_grouped_mel_equal_the_textbook_computation(signals, n_mels):
    """9 windows of 2 s and a partial tail: any number of threads, the full windows read as views of the
    waveform, and the filter bank applied per group of bands give the dense computation's numbers."""
    wave = torch.from_numpy(signals.harmonic(19.3) + 0.1 * signals.noise(19.3))
    windows = split_windows(wave, window_seconds=2.0)
    want = _dense_log_mel(windows.samples, n_mels)
    features, mask = whisper_features(wave, n_mels=n_mels, window_seconds=2.0)
    assert features.shape == (10, n_mels, 200) and mask.sum(-1).tolist() == [200] * 9 + [130]
    torch.testing.assert_close(features, want, rtol=0, atol=2e-5)
    for workers in (1, 2, 3):
        got = log_mel_spectrogram(windows.samples, n_mels=n_mels, workers=workers)
        torch.testing.assert_close(got, features, rtol=0, atol=1e-6)
    # Other devices compute all windows as one batch: the same block code, several windows at once.
    batched = torch.empty_like(features)
    bank = mel_filter_bank(n_mels)
    plan = features_module._Plan(
        torch.hann_window(400), features_module._mel_groups(bank), 160, 200
    )
    features_module._run_jobs([(windows.samples, batched, 200)], plan)
    torch.testing.assert_close(batched, features, rtol=0, atol=1e-6)


@pytest.mark.parametrize("tail", [1, 159, 160, 201, 4_000, 31_600, 31_700, 31_799, 31_999])
def test_the_silent_frames_of_a_partial_window_are_not_computed_and_equal_the_textbook(tail):
    """A last window of ``tail`` real samples (2 s windows, 32,000 samples): the frames that read only its zero
    padding are written as silence, not computed, and every frame equals the dense computation's."""
    wave = torch.randn(32_000 + tail, generator=torch.Generator().manual_seed(tail)) * 0.1
    want = _dense_log_mel(split_windows(wave, window_seconds=2.0).samples, 128)
    live = features_module._live_frames(tail, 400, 160, 32_000, 200)
    if tail <= 4_000:  # frames up to the last one that starts before the real samples end
        assert live == -(-(tail + 200) // 160)
    if tail >= 31_600:  # a frame would reach the window's end (reflect padding): all computed
        assert live == 200
    features, _ = whisper_features(wave, window_seconds=2.0)
    torch.testing.assert_close(features, want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("length", [201, 300, 399, 400, 560, 561, 800, 1234])
def test_short_windows_equal_the_textbook_computation(length):
    """Windows where most or all frames reach into the reflect padding (framed from a padded copy)."""
    windows = torch.randn(3, length, generator=torch.Generator().manual_seed(length))
    got = log_mel_spectrogram(windows, workers=2)
    assert got.shape == (3, 128, length // 160)
    torch.testing.assert_close(got, _dense_log_mel(windows, 128), rtol=0, atol=2e-5)


@pytest.mark.parametrize("n_fft", [399, 401, 512])
@pytest.mark.parametrize("length", [4040, 4041, 4200])
def test_any_n_fft_equals_the_textbook_computation(n_fft, length):
    """An odd n_fft covers pad + 1 samples right of a frame's centre: at 4040 samples (4040 - 200 a multiple
    of the hop) the last frame reaches into the padding and must be framed from the padded edge."""
    windows = torch.randn(2, length, generator=torch.Generator().manual_seed(n_fft + length))
    got = log_mel_spectrogram(windows, n_fft=n_fft, workers=2)
    torch.testing.assert_close(got, _dense_log_mel(windows, 128, n_fft), rtol=0, atol=2e-5)


def test_log_mel_rejects_windows_too_short_to_reflect_pad():
    with pytest.raises(AudioError, match=r"more than n_fft // 2 = 200 samples.*shape \(2, 200\)"):
        log_mel_spectrogram(torch.zeros(2, 200))
    with pytest.raises(AudioError, match=r"shape \(480000,\)"):
        log_mel_spectrogram(torch.zeros(480000))


def test_threads_leave_the_callers_thread_settings_alone(signals):
    """The windows are shared among helper threads that run on one intra-op thread each; afterwards the
    caller, and threads started later, have the thread count they had before."""
    wave = torch.from_numpy(signals.noise(95.0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two, _ = whisper_features(wave)
        assert torch.get_num_threads() == 2
        seen = []
        helper = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        helper.start()
        helper.join()
        assert seen == [2]
        torch.set_num_threads(1)  # e.g. a DataLoader worker: no helper threads at all
        one, _ = whisper_features(wave)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_samples_are_an_error_naming_the_window(signals, bad):
    wave = torch.from_numpy(signals.noise(75.0))
    wave[SR * 40 + 123] = bad  # in the second 30 s window
    with pytest.raises(
        AudioError, match=r"<waveform>: non-finite samples .* in window 1 \(30-60 s\) of 3"
    ):
        whisper_features(wave)
    windows = split_windows(wave).samples
    windows[2, 0] = bad
    with pytest.raises(AudioError, match=r"<windows>: .* window 1 \(30-60 s\), 2 \(60-90 s\) of 3"):
        log_mel_spectrogram(windows, workers=2)
