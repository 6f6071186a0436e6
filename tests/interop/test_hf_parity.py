"""Parity with transformers' AF3 and Music Flamingo (AF-Next) classes, tiny and random, float32 on CPU.

Each reference model is saved with ``save_pretrained`` and loaded by afnext from that folder; logits must
agree within 1e-4 on a batch of two samples of different lengths (one over two windows with a padded
tail), greedy ``generate`` must give identical tokens, and afnext -> ``save_pretrained(format="hf")`` ->
transformers must give the same logits again.
"""

from __future__ import annotations

import pytest
import torch

from afnext import AudioLanguageModel
from tests.helpers import chat, save_tiny_hf, tone_mix

pytestmark = (
    pytest.mark.slow
)  # each case runs a 4-window encoder several times (about a minute in all)

ATOL = 1e-4


@pytest.fixture(scope="module", params=["af3", "mf"])
def pair(request, tmp_path_factory):
    """(kind, transformers model, afnext model, inputs) for one checkpoint kind."""
    kind = request.param
    folder = tmp_path_factory.mktemp(f"hf_{kind}")
    ref, processor = save_tiny_hf(folder, kind)
    ours = AudioLanguageModel.from_pretrained(folder).eval()
    tok = processor.tokenizer
    texts = [
        tok.apply_chat_template(chat("What is it?"), tokenize=False, add_generation_prompt=True),
        tok.apply_chat_template(
            chat("How many beeps?"), tokenize=False, add_generation_prompt=True
        ),
    ]
    # 3 s, and 65 s = three windows with a 5 s tail: the batch mixes lengths and padding.
    inputs = processor(text=texts, audio=[tone_mix(3.0, 1), tone_mix(65.0, 2)], padding=True)
    inputs.pop("num_audio_tokens", None)
    return kind, ref, ours, dict(inputs)


def test_inputs_cover_the_hard_cases(pair):
    kind, _, ours, inputs = pair
    assert inputs["input_features"].shape == (4, 128, 3000)
    assert inputs["input_features_mask"][-1].sum() == 500  # padded tail of the last window
    assert (inputs["attention_mask"] == 0).any()  # the shorter sample is padded
    assert ours.audio_boundary_tokens == (kind == "mf")
    assert (ours.time_embedding is not None) == (kind == "mf")


def test_logits_match_transformers(pair):
    _, ref, ours, inputs = pair
    with torch.no_grad():
        expected = ref(**inputs).logits
        got = ours(**inputs).logits
    real = inputs["attention_mask"].bool()
    assert got.shape == expected.shape
    torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)


def test_loss_matches_transformers(pair):
    _, ref, ours, inputs = pair
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    with torch.no_grad():
        expected = ref(**inputs, labels=labels).loss
        got = ours(**inputs, labels=labels).loss
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_greedy_generate_is_identical(pair):
    _, ref, ours, inputs = pair
    expected = ref.generate(**inputs, max_new_tokens=6, do_sample=False)
    got = ours.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, expected)


def test_hf_export_round_trip(pair, tmp_path):
    kind, ref, ours, inputs = pair
    ours.save_pretrained(tmp_path / "export", format="hf")
    cls = type(ref)
    back = cls.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        expected = ours(**inputs).logits
        got = back(**inputs).logits
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)
    # The folder also loads back into afnext and keeps its kind.
    again = AudioLanguageModel.from_pretrained(tmp_path / "export")
    assert (again.time_embedding is not None) == (kind == "mf")
