"""A tiny AF-Next-style model (transformers' MusicFlamingo: AF-Whisper encoder, RoTE, projector, Qwen2) trained one
step with attention dispatched to the Triton kernels (interpreter on CPU) gives sdpa's loss and gradients.

The composition is transformers' ``MusicFlamingoForConditionalGeneration`` (the architecture AF-Next's checkpoints
use) built with tiny random weights; both of its attention stacks (encoder windows, causal LLM) go through
``attn_implementation="afnext_varlen"``. float32; tolerances 1e-5 on the loss, 1e-4 absolute on every gradient
(observed ~1e-6).
"""

from __future__ import annotations

import pytest
import torch

import afnext_kernels

AUDIO, BOS, EOS, VOCAB = 90, 91, 92, 96


def _model(attn: str):
    from transformers import MusicFlamingoConfig, MusicFlamingoForConditionalGeneration

    config = MusicFlamingoConfig(
        audio_config={
            "model_type": "audioflamingo3_encoder", "d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64, "num_mel_bins": 16, "max_source_positions": 16,
        },
        text_config={
            "model_type": "qwen2", "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
        },
        audio_token_id=AUDIO, audio_bos_token_id=BOS, audio_eos_token_id=EOS,
    )  # fmt: skip
    torch.manual_seed(0)
    return MusicFlamingoForConditionalGeneration._from_config(config, attn_implementation=attn)


def _step(model):
    torch.manual_seed(1)
    features = torch.randn(2, 16, 32)  # two 32-frame windows of one recording
    mask = torch.ones(2, 32, dtype=torch.long)
    mask[1, 20:] = 0  # last window partial: 8 + 5 audio tokens
    text = torch.randint(1, 80, (1, 6))
    ids = torch.cat([text[:, :3], torch.tensor([[BOS] + [AUDIO] * 13 + [EOS]]), text[:, 3:]], dim=1)
    labels = ids.clone()
    labels[:, :18] = -100
    out = model(input_ids=ids, input_features=features, input_features_mask=mask, labels=labels)
    out.loss.backward()
    return out.loss.detach(), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


@pytest.mark.slow
def test_tiny_musicflamingo_triton_matches_sdpa(require_impl):
    require_impl("triton", "cpu")
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "MusicFlamingoForConditionalGeneration"):
        pytest.skip(f"transformers {transformers.__version__} has no MusicFlamingo")
    name = afnext_kernels.register()
    sdpa = _model("sdpa")
    ours = _model(name)
    ours.load_state_dict(sdpa.state_dict())
    want_loss, want_grads = _step(sdpa)
    afnext_kernels.set_default_impl("triton")
    try:
        got_loss, got_grads = _step(ours)
    finally:
        afnext_kernels.set_default_impl(None)
    assert abs(got_loss.item() - want_loss.item()) <= 1e-5
    assert got_grads.keys() == want_grads.keys() and len(got_grads) > 10
    for key, want in want_grads.items():
        assert (got_grads[key] - want).abs().max().item() <= 1e-4, key
