"""Token timestamps and token counts agree with the transformers reference code."""

from __future__ import annotations

import types

import pytest
import torch

from afnext.audio import token_timestamps, whisper_features, whisper_token_lengths


def test_af_whisper_timestamps_by_formula():
    ts = token_timestamps(3, 750)
    assert ts.shape == (3, 750) and ts.dtype == torch.float32
    assert ts[0, 0].item() == 0.0
    assert ts[0, 1].item() == pytest.approx(0.04)
    assert ts[1, 0].item() == 30.0
    assert ts[2, 749].item() == pytest.approx(60 + 749 * 0.04, abs=1e-4)
    expected = 30.0 * torch.arange(3.0)[:, None] + 0.04 * torch.arange(750.0)[None, :]
    assert torch.allclose(ts, expected, atol=1e-4, rtol=0)
    assert token_timestamps(2, 100, window_seconds=10.0)[1, 50].item() == pytest.approx(15.0)


def test_timestamps_equal_music_flamingo_reference():
    from transformers.models.musicflamingo import modeling_musicflamingo as mf

    # The helper moved from the ForConditionalGeneration class to MusicFlamingoModel in transformers 5.2x.
    owner = next(
        cls
        for cls in (
            getattr(mf, "MusicFlamingoModel", None),
            mf.MusicFlamingoForConditionalGeneration,
        )
        if cls is not None and hasattr(cls, "_build_audio_timestamps")
    )

    # Two audios in one prompt: 3 windows and 2 windows, 750 tokens per window (full windows).
    audio_token_id = 7
    windows_per_audio = [3, 2]
    post_lengths = torch.full((sum(windows_per_audio),), 750)
    ids = [1, 2]
    for w in windows_per_audio:
        ids += [audio_token_id] * (750 * w) + [3]
    input_ids = torch.tensor([ids])
    stand_in = types.SimpleNamespace(
        config=types.SimpleNamespace(audio_token_id=audio_token_id, audio_frame_step=0.01)
    )
    reference = owner._build_audio_timestamps(
        stand_in, input_ids, post_lengths, 750
    )  # (5, 750): window index restarts at 0 for the second audio
    ours = torch.cat([token_timestamps(w, 750) for w in windows_per_audio])
    assert torch.equal(ours, reference)


@pytest.mark.parametrize(
    ("frames", "tokens"), [(3000, 750), (2999, 750), (1, 0), (2, 0), (4, 1), (5, 1), (1501, 375)]
)
def test_token_lengths(frames, tokens):
    assert whisper_token_lengths(frames) == tokens
    assert whisper_token_lengths(torch.tensor([frames])).tolist() == [tokens]


@pytest.mark.parametrize("seconds", [0.5, 30.0, 47.3, 75.0])
def test_token_counts_equal_the_af3_processor(seconds, af3_reference, signals):
    wave = signals.noise(seconds)
    _, mask = whisper_features(torch.from_numpy(wave))
    per_window = whisper_token_lengths(mask.sum(-1))  # (W,)
    reference = af3_reference(wave)["num_audio_tokens"]  # (1,) tokens of the whole audio
    assert per_window.sum().item() == reference.item()
