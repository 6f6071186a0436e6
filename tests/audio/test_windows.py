"""30 s windows: counts, padding, sample and frame masks, the length limit."""

from __future__ import annotations

import pytest
import torch

from afnext.audio import (
    AudioWindows,
    check_duration,
    num_windows,
    split_windows,
    valid_frames,
    window_samples,
)
from afnext.errors import AudioError, AudioTooLongError

SR = 16000
N = 30 * SR


@pytest.mark.parametrize(
    ("seconds", "windows", "last_len", "last_frames"),
    [
        (29.99, 1, 479840, 2999),
        (30.0, 1, N, 3000),
        (30.01, 2, 160, 1),
        (75.0, 3, 15 * SR, 1500),
        (0.005, 1, 80, 1),
    ],
)
def test_counts_lengths_and_masks(seconds, windows, last_len, last_frames):
    total = round(seconds * SR)
    wave = torch.arange(1, total + 1, dtype=torch.float32)  # non-zero, so padding is visible
    out = split_windows(wave)

    assert isinstance(out, AudioWindows)
    assert out.samples.shape == (windows, N)
    assert out.lengths.tolist() == [N] * (windows - 1) + [last_len]
    assert num_windows(total, N) == windows
    # The windows are the waveform in order, then zeros.
    assert torch.equal(out.samples.flatten()[:total], wave)
    assert (out.samples.flatten()[total:] == 0).all()

    sample_mask = out.sample_mask
    assert sample_mask.shape == (windows, N)
    assert sample_mask.sum().item() == total
    assert torch.equal(out.samples.flatten()[sample_mask.flatten()], wave)

    frame_mask = out.frame_mask()
    assert frame_mask.shape == (windows, 3000)
    assert frame_mask.sum(-1).tolist() == [3000] * (windows - 1) + [last_frames]
    # Real frames come first, padding after: the mask is a prefix.
    assert torch.equal(frame_mask, frame_mask.cummin(dim=-1).values)


def test_max_seconds_boundary():
    at_limit = split_windows(torch.zeros(1800 * SR))
    assert at_limit.samples.shape == (60, N)
    with pytest.raises(AudioError) as info:
        split_windows(torch.zeros(1800 * SR + 1))
    message = str(info.value)
    assert "1800.00 s long (28800001 samples at 16000 Hz)" in message
    assert "over the limit of 1800 s" in message
    assert "`max_seconds`" in message and "`data.max_audio_seconds`" in message
    assert isinstance(
        info.value, AudioTooLongError
    )  # what a server tells apart from undecodable audio
    assert (info.value.seconds, info.value.max_seconds) == (1800 + 1 / SR, 1800.0)

    assert split_windows(torch.zeros(61 * SR), max_seconds=None).samples.shape == (3, N)
    assert split_windows(torch.zeros(10 * SR), max_seconds=10).samples.shape == (1, N)
    with pytest.raises(AudioError, match=r"limit of 9\.5 s"):
        split_windows(torch.zeros(10 * SR), max_seconds=9.5)


def test_check_duration_names_the_source():
    check_duration(SR * 5, SR, 5.0, source="a.wav")  # at the limit: fine
    check_duration(SR * 5, SR, None, source="a.wav")
    with pytest.raises(AudioError, match=r"^a.wav: audio is 5.00 s long") as info:
        check_duration(SR * 5, SR, 4.0, source="a.wav")
    assert info.value.source == "a.wav"


def test_other_window_lengths_and_rates():
    out = split_windows(torch.ones(25 * 8000), sampling_rate=8000, window_seconds=10.0)
    assert out.samples.shape == (3, 80000)
    assert out.lengths.tolist() == [80000, 80000, 40000]
    assert out.frame_mask(hop_length=80).sum(-1).tolist() == [1000, 1000, 500]
    assert window_samples(0.5) == 8000
    with pytest.raises(ValueError, match="whole number of samples"):
        window_samples(1 / 3)
    with pytest.raises(ValueError, match="positive"):
        window_samples(0.0)


def test_valid_frames_rounds_up_and_caps():
    lengths = torch.tensor([1, 159, 160, 161, 479999, 480000])
    assert valid_frames(lengths, 160, 3000).tolist() == [1, 1, 1, 2, 3000, 3000]
    # A window length that is not a multiple of the hop: the dropped last frame caps the count.
    assert valid_frames(torch.tensor([1000]), 160, 1000 // 160).tolist() == [6]


def test_bad_waveforms():
    with pytest.raises(AudioError, match=r"shape \(2, 100\)"):
        split_windows(torch.zeros(2, 100))
    with pytest.raises(AudioError, match="empty"):
        split_windows(torch.zeros(0))


def test_audio_errors_pickle_with_their_parts():
    """A data-loader worker's audio error reaches the main process whole (type, source, fix, lengths)."""
    import pickle

    too_long = pickle.loads(
        pickle.dumps(AudioTooLongError("long", "a.wav", "trim", seconds=2.0, max_seconds=1.0))
    )
    assert type(too_long) is AudioTooLongError and str(too_long) == "a.wav: long trim"
    assert (too_long.source, too_long.fix, too_long.seconds, too_long.max_seconds) == (
        "a.wav",
        "trim",
        2.0,
        1.0,
    )
    plain = pickle.loads(pickle.dumps(AudioError("empty", "b.wav")))
    assert (plain.problem, plain.source, plain.fix, str(plain)) == (
        "empty",
        "b.wav",
        None,
        "b.wav: empty",
    )
