"""Packed rows keep their samples apart: the same loss and gradients packed as one sample at a time.

Tiny Qwen2, Llama and Qwen3 LLMs with audio, float32. Under ``afnext_varlen`` the documents of packed rows (any
number of rows) are separate varlen sequences; under ``sdpa`` / ``eager`` transformers builds a block-diagonal
mask from the restarting ``position_ids``; another back end is refused.
"""

from __future__ import annotations

import pytest
import torch

from afnext import AudioLanguageModel
from afnext.connectors.mlp import MLPConnector
from afnext.connectors.rote import RotaryTimeEmbedding
from afnext.data.collate import Collator
from afnext.data.processor import AudioProcessor
from afnext.encoders.whisper import AFWhisperEncoder
from afnext.errors import ConfigError, InputError
from afnext.llms.hf import HFCausalLM
from afnext.llms.loss import IGNORE_INDEX, shift_labels
from tests.helpers import TINY_LLM, tone_mix

LLMS = {
    "qwen2": TINY_LLM,
    "llama": {**TINY_LLM, "model_type": "llama"},
    "qwen3": {**TINY_LLM, "model_type": "qwen3", "head_dim": 8},
}


def build(llm_config: dict, attn: str, loss_impl: str = "fused") -> AudioLanguageModel:
    torch.manual_seed(0)
    encoder = AFWhisperEncoder(d_model=40, num_layers=1, num_heads=2, ffn_dim=64)
    llm = HFCausalLM(config={**llm_config, "num_hidden_layers": 2}, attn_implementation=attn)
    model = AudioLanguageModel.build(
        encoder, MLPConnector, llm, RotaryTimeEmbedding, loss_impl=loss_impl
    )
    return model.float()


def samples(model: AudioLanguageModel) -> list[dict]:
    """Five samples of different lengths, four with audio (one with two audios), one text-only."""
    proc = AudioProcessor.from_model(model, padding_side="right")
    specs = [
        ("<sound>What is this?", "A tone.", [tone_mix(2.0, 1)]),
        ("Say something.", "Something long enough to span a few tokens.", []),
        (
            "<sound> then <sound>: which is longer?",
            "The second one.",
            [tone_mix(0.6, 2), tone_mix(3.1, 3)],
        ),
        ("<sound>Count the beats.", "Three.", [tone_mix(1.3, 4)]),
        ("<sound>Describe.", "Harmonics over noise, steady pitch.", [tone_mix(4.2, 5)]),
    ]
    out = []
    for i, (question, answer, audio) in enumerate(specs):
        conv = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        b = proc([conv], audio=[audio], return_labels=True)
        n = int(b["input_ids"].shape[1])
        feats = b.get("input_features")
        if feats is None:
            feats, mask = torch.zeros(0, 128, 3000), torch.zeros(0, 3000, dtype=torch.long)
        else:
            mask = b["input_features_mask"]
        out.append(
            {
                "id": str(i),
                "where": f"test:{i}",
                "input_ids": b["input_ids"][0],
                "labels": b["labels"][0],
                "input_features": feats,
                "input_features_mask": mask,
                "num_tokens": n,
                "audio_seconds": 1.0,
            }
        )
    return out


MODEL_KEYS = (
    "input_ids",
    "attention_mask",
    "labels",
    "input_features",
    "input_features_mask",
    "position_ids",
)


def _inputs(batch: dict) -> dict:
    return {k: batch[k] for k in MODEL_KEYS if batch.get(k) is not None}


def summed_loss_and_grads(model: AudioLanguageModel, batch: dict) -> tuple[torch.Tensor, dict]:
    """Loss summed over target tokens (mean x count) and its gradients."""
    model.zero_grad()
    targets = int((shift_labels(batch["labels"]) != IGNORE_INDEX).sum())
    out = model(**_inputs(batch))
    total = out.loss * targets
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return total.detach(), grads


def one_at_a_time(model: AudioLanguageModel, items: list[dict]) -> tuple[torch.Tensor, dict]:
    collate = Collator(model.llm.tokenizer.pad_token_id)
    total, grads = torch.zeros(()), {}
    for item in items:
        loss, g = summed_loss_and_grads(model, collate([item]))
        total = total + loss
        for name, value in g.items():
            grads[name] = grads.get(name, 0) + value
    return total, grads


def _assert_same(a: tuple[torch.Tensor, dict], b: tuple[torch.Tensor, dict], tol: float) -> None:
    torch.testing.assert_close(a[0], b[0], rtol=tol, atol=tol)
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize("llm", sorted(LLMS))
@pytest.mark.parametrize("attn", ["afnext_varlen", "sdpa", "eager"])
def test_packed_rows_give_the_per_sample_losses_and_gradients(llm, attn):
    model = build(LLMS[llm], attn)
    items = samples(model)
    widest = max(int(it["num_tokens"]) for it in items)
    # Rows hold two or three samples each (several rows: the varlen path must not assume a batch of one).
    packed = Collator(model.llm.tokenizer.pad_token_id, pack=True, max_length=widest + 40)(items)
    assert packed["input_ids"].shape[0] >= 2
    assert (packed["position_ids"] == 0).sum() > packed["input_ids"].shape[0]  # really packed
    _assert_same(summed_loss_and_grads(model, packed), one_at_a_time(model, items), 1e-5)


def test_packed_naive_loss_equals_the_fused_one():
    fused = build(LLMS["qwen2"], "afnext_varlen")
    naive = build(LLMS["qwen2"], "afnext_varlen", loss_impl="naive")
    items = samples(fused)
    packed = Collator(fused.llm.tokenizer.pad_token_id, pack=True, max_length=400)(items)
    _assert_same(summed_loss_and_grads(fused, packed), summed_loss_and_grads(naive, packed), 1e-5)


def test_a_back_end_that_cannot_separate_documents_is_refused(monkeypatch):
    model = build(LLMS["qwen2"], "sdpa")
    items = samples(model)
    packed = Collator(model.llm.tokenizer.pad_token_id, pack=True, max_length=400)(items)
    monkeypatch.setattr(
        type(model.llm), "active_attn_implementation", property(lambda self: "custom")
    )
    with pytest.raises(ConfigError, match="afnext_varlen"):
        model(**_inputs(packed))


def test_packed_rows_with_a_padding_mask_are_an_error():
    model = build(LLMS["qwen2"], "sdpa")
    packed = Collator(model.llm.tokenizer.pad_token_id, pack=True, max_length=400)(samples(model))
    packed["attention_mask"][0, -1] = 0
    with pytest.raises(InputError, match="padding mask"):
        model(**_inputs(packed))


def test_labels_never_cross_a_sample_boundary():
    model = build(LLMS["qwen2"], "sdpa")
    packed = Collator(model.llm.tokenizer.pad_token_id, pack=True, max_length=400)(samples(model))
    targets = shift_labels(packed["labels"])
    starts = packed["position_ids"] == 0
    # The token before a document start predicts nothing (it would predict the next sample's first token).
    before = torch.zeros_like(starts)
    before[:, :-1] = starts[:, 1:]
    assert (targets[before] == IGNORE_INDEX).all()
