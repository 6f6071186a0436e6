"""transformers integration (``afnext_kernels/hf.py``): attn_implementation="afnext_varlen" equals "sdpa" on tiny
random models.

float32 throughout; tolerance 1e-5 absolute on hidden states / logits of O(1) (observed ~1e-6). Outputs are
compared on valid positions only: like flash-attn, the packed call returns zeros for padded query rows.

Last, a tiny AF-Next-style model (transformers' MusicFlamingo: AF-Whisper encoder, RoTE, projector, Qwen2) trained
one step with attention dispatched to the Triton kernels (interpreter on CPU) gives sdpa's loss and gradients: both
of its attention stacks (encoder windows, causal LLM) go through ``attn_implementation="afnext_varlen"``; tolerances
1e-5 on the loss, 1e-4 absolute on every gradient (observed ~1e-6).
"""

from __future__ import annotations

import copy

import pytest
import torch

import afnext_kernels
from afnext_kernels.errors import KernelInputError

NAME = afnext_kernels.register()


# The Triton variants run the interpreter through whole models: second CI step (the kernels themselves are
# checked against dense attention in test_attention.py).
@pytest.fixture(params=["reference", pytest.param("triton", marks=pytest.mark.slow)])
def impl(request, require_impl):
    require_impl(request.param, "cpu")
    afnext_kernels.set_default_impl(request.param)
    yield request.param
    afnext_kernels.set_default_impl(None)


def _pair(build, config):
    """The same random weights under sdpa and under afnext_varlen.

    Each model gets its own copy of the config: ``_from_config(attn_implementation=)`` writes the choice into the
    config, and a shared one would make both models run the last choice (comparing ours with ours).
    """
    torch.manual_seed(0)
    sdpa = build(copy.deepcopy(config), "sdpa").eval()
    ours = build(copy.deepcopy(config), NAME).eval()
    ours.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa"
    assert ours.config._attn_implementation == NAME
    return sdpa, ours


def test_register_is_idempotent():
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    assert afnext_kernels.register() == NAME == afnext_kernels.register()
    assert (
        NAME in AttentionInterface._global_mapping
        and NAME in AttentionMaskInterface._global_mapping
    )


def test_whisper_encoder_windows_pack_into_one_call(impl, monkeypatch):
    import afnext_kernels.hf as hf

    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "AudioFlamingo3EncoderConfig"):
        pytest.skip(f"transformers {transformers.__version__} has no AudioFlamingo3 encoder")
    from transformers import AudioFlamingo3EncoderConfig
    from transformers.models.audioflamingo3.modeling_audioflamingo3 import AudioFlamingo3Encoder

    config = AudioFlamingo3EncoderConfig(
        d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=16,
        max_source_positions=16,
    )  # fmt: skip
    sdpa, ours = _pair(
        lambda c, a: AudioFlamingo3Encoder._from_config(c, attn_implementation=a), config
    )
    features = torch.randn(3, 16, 32)
    mask = torch.ones(3, 32, dtype=torch.long)
    mask[2, 21:] = 0  # the last window is partial: 21 of 32 mel frames
    calls = []
    real = hf.flash_attn_varlen
    monkeypatch.setattr(
        hf, "flash_attn_varlen", lambda *a, **k: calls.append(a[3].tolist()) or real(*a, **k)
    )
    with torch.no_grad():
        want = sdpa(features, input_features_mask=mask).last_hidden_state  # (3, 8, 32)
        got = ours(features, input_features_mask=mask).last_hidden_state
    # One packed call per layer with the true window lengths (conv: (21 - 1) // 2 + 1 = 11 frames).
    assert calls == [[0, 16, 32, 43]] * 2
    valid = [8, 8, (11 - 2) // 2 + 1]
    for w, n in enumerate(valid):
        assert (got[w, :n] - want[w, :n]).abs().max().item() <= 1e-5


def _qwen2(config, attn):
    from transformers import Qwen2ForCausalLM

    return Qwen2ForCausalLM._from_config(config, attn_implementation=attn)


@pytest.fixture(scope="module")
def qwen2_config():
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
    )  # fmt: skip


@pytest.mark.parametrize("side", ["left", "right"])
def test_qwen2_padded_forward_matches_sdpa(impl, qwen2_config, side):
    sdpa, ours = _pair(_qwen2, qwen2_config)
    ids = torch.randint(1, 97, (3, 9))
    mask = torch.ones_like(ids)
    for row, pad in enumerate([0, 4, 7]):
        if pad:
            mask[row, :pad] = 0 if side == "left" else 1
            if side == "right":
                mask[row, -pad:] = 0
    with torch.no_grad():
        want = sdpa(input_ids=ids, attention_mask=mask).logits
        got = ours(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    assert (got[keep] - want[keep]).abs().max().item() <= 1e-5


def test_qwen2_packed_position_ids_match_separate_sequences(impl, qwen2_config):
    _, ours = _pair(_qwen2, qwen2_config)
    lengths = [5, 1, 7]
    ids = torch.randint(1, 97, (1, sum(lengths)))
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    with torch.no_grad():
        packed = ours(input_ids=ids, position_ids=position_ids).logits[0]
        parts = torch.split(ids, lengths, dim=1)
        separate = torch.cat([ours(input_ids=p).logits[0] for p in parts])
    assert (packed - separate).abs().max().item() <= 1e-5


def test_qwen2_greedy_generate_matches_sdpa(qwen2_config):
    # Reference path: a prefill over a left-padded batch then KV-cache decode steps (queries < keys).
    afnext_kernels.set_default_impl("reference")
    try:
        sdpa, ours = _pair(_qwen2, qwen2_config)
        ids = torch.randint(1, 97, (2, 6))
        mask = torch.ones_like(ids)
        mask[1, :3] = 0
        kwargs = {
            "attention_mask": mask,
            "max_new_tokens": 6,
            "do_sample": False,
            "pad_token_id": 0,
        }
        want = sdpa.generate(ids, **kwargs)
        got = ours.generate(ids, **kwargs)
    finally:
        afnext_kernels.set_default_impl(None)
    assert torch.equal(got, want)


def test_four_d_masks_and_dropout_are_refused(qwen2_config):
    from afnext_kernels.hf import afnext_varlen_attention_forward

    module = torch.nn.Module()
    q = torch.randn(1, 2, 3, 8)
    with pytest.raises(KernelInputError, match="2-D key-padding mask"):
        afnext_varlen_attention_forward(module, q, q, q, torch.ones(1, 1, 3, 3, dtype=torch.bool))
    with pytest.raises(KernelInputError, match="dropout"):
        afnext_varlen_attention_forward(module, q, q, q, None, dropout=0.1)


AUDIO, BOS, EOS, VOCAB = 90, 91, 92, 96


def _musicflamingo(attn: str):
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


def _train_step(model):
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
    sdpa = _musicflamingo("sdpa")
    ours = _musicflamingo(name)
    ours.load_state_dict(sdpa.state_dict())
    want_loss, want_grads = _train_step(sdpa)
    afnext_kernels.set_default_impl("triton")
    try:
        got_loss, got_grads = _train_step(ours)
    finally:
        afnext_kernels.set_default_impl(None)
    assert abs(got_loss.item() - want_loss.item()) <= 1e-5
    assert got_grads.keys() == want_grads.keys() and len(got_grads) > 10
    for key, want in want_grads.items():
        assert (got_grads[key] - want).abs().max().item() <= 1e-4, key
