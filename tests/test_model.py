"""AudioLanguageModel composition: splicing, mixed batches, trainable parts, errors, generate, checkpoints."""

from __future__ import annotations

import pytest
import torch

from afnext import AudioLanguageModel
from afnext.connectors.mlp import MLPConnector
from afnext.connectors.rote import RotaryTimeEmbedding
from afnext.connectors.stack import FrameStackConnector
from afnext.data.processor import AudioProcessor
from afnext.encoders.whisper import AFWhisperEncoder
from afnext.errors import CheckpointError, ConfigError, InputError
from afnext.llms.hf import HFCausalLM
from tests.helpers import TINY_LLM, tone_mix

LLM = TINY_LLM


def build(
    connector=MLPConnector,
    time_embedding=True,
    lora=None,
    trainable=("encoder", "connector", "llm"),
):
    torch.manual_seed(0)
    enc = AFWhisperEncoder(d_model=40, num_layers=1, num_heads=2, ffn_dim=64)
    llm = HFCausalLM(config=LLM, lora=lora)
    te = RotaryTimeEmbedding if time_embedding else None
    return AudioLanguageModel.build(enc, connector, llm, te, trainable=trainable)


@pytest.fixture(scope="module")
def model():
    return build().eval()


@pytest.fixture(scope="module")
def batch(model):
    proc = AudioProcessor.from_model(model, padding_side="right")
    convs = [
        [
            {"role": "user", "content": "<sound> and <sound>: which is longer?"},
            {"role": "assistant", "content": "The second."},
        ],
        [
            {
                "role": "user",
                "content": [
                    {"type": "audio", "audio": tone_mix(33.0, 3)},
                    {"type": "text", "text": "Q?"},
                ],
            },
            {"role": "assistant", "content": "A."},
        ],
    ]
    audio = [[tone_mix(1.2, 1), tone_mix(4.0, 2)], []]
    return proc(convs, audio=audio, return_labels=True)


def test_sizes_come_from_the_neighbours(model):
    assert model.connector.in_dim == 40 and model.connector.out_dim == 32
    assert model.time_embedding.dim == 40 and model.time_embedding.frame_rate == 25.0


def test_forward_with_several_audios_and_mixed_lengths(model, batch):
    assert batch["input_features"].shape[0] == 1 + 1 + 2  # 1.2 s, 4 s, then 33 s = two windows
    out = model(**batch)
    assert out.logits is None and torch.isfinite(out.loss)  # fused loss: no logits built
    model.loss_impl = "naive"
    try:
        naive = model(**batch)
    finally:
        model.loss_impl = "fused"
    assert naive.logits.shape[:2] == batch["input_ids"].shape
    torch.testing.assert_close(out.loss, naive.loss, rtol=1e-5, atol=1e-6)
    assert model(**{k: v for k, v in batch.items() if k != "labels"}).logits is not None


def test_window_index_restarts_per_audio(model, batch):
    window_tokens = model.audio_tokens_for_frames(batch["input_features_mask"].sum(-1))
    index = model._window_index(batch["input_ids"], window_tokens)
    assert index.tolist() == [0, 0, 0, 1]


def test_an_empty_last_window_stays_with_its_audio():
    """2 s windows: 2 s + 100 samples leaves a last window of one frame, which yields no token. It belongs to
    its own audio, so the next audio's windows restart at 0 (same tokens as that audio alone), and an audio
    ending that way is fine last in the prompt too."""
    torch.manual_seed(0)
    enc = AFWhisperEncoder(
        d_model=40, num_layers=1, num_heads=2, ffn_dim=64, max_source_positions=100
    )
    m = AudioLanguageModel.build(
        enc, MLPConnector, HFCausalLM(config=LLM), RotaryTimeEmbedding
    ).eval()
    proc = AudioProcessor.from_model(m, padding_side="right")
    short_tail, other = tone_mix(2.0 + 100 / 16000, 1), tone_mix(3.0, 2)

    def encoded(audios):
        conv = [{"role": "user", "content": "<sound>" * len(audios) + "x"}]
        out = proc([conv], audio=[audios])
        tokens = m.audio_tokens_for_frames(out["input_features_mask"].sum(-1))
        index = m._window_index(out["input_ids"], tokens)
        with torch.no_grad():
            return (
                tokens,
                index,
                m.encode_audio(out["input_features"], out["input_features_mask"], out["input_ids"]),
            )

    tokens, index, both = encoded([short_tail, other])
    assert tokens.tolist() == [50, 0, 50, 25] and index.tolist() == [0, 1, 0, 1]
    _, _, alone = encoded([other])
    torch.testing.assert_close(both[50:], alone, rtol=0, atol=0)
    _, index, _ = encoded([other, short_tail])
    assert index.tolist() == [0, 1, 0, 1]


def test_spliced_positions_carry_audio_and_text_is_untouched(model, batch):
    embeds = model.embed_inputs(
        batch["input_ids"], batch["input_features"], batch["input_features_mask"]
    )
    plain = model.llm.embed(batch["input_ids"])
    slots = batch["input_ids"] == model.audio_token_id
    assert torch.equal(embeds[~slots], plain[~slots])
    assert not torch.allclose(embeds[slots], plain[slots])


def test_stack_connector_cuts_tokens_and_trains():
    m = build(connector=lambda in_dim, out_dim: FrameStackConnector(in_dim, out_dim, stack=5))
    proc = AudioProcessor.from_model(m, padding_side="right")
    out = proc(
        [[{"role": "user", "content": "<sound>x"}, {"role": "assistant", "content": "y"}]],
        audio=[[tone_mix(2.0)]],
        return_labels=True,
    )
    assert int((out["input_ids"] == m.audio_token_id).sum()) == 10  # 50 frames / 5
    loss = m(**out).loss
    loss.backward()
    assert m.connector.linear_1.weight.grad is not None


def test_trainable_parts_are_declared():
    m = build(trainable=("connector",))
    counts = m.parameter_counts()
    assert counts["connector"]["trainable"] == counts["connector"]["total"] > 0
    assert counts["encoder"]["trainable"] == 0 and counts["llm"]["trainable"] == 0
    lora = build(lora={"r": 2, "target_modules": ["q_proj"]}, trainable=("lora", "connector"))
    counts = lora.parameter_counts()
    assert 0 < counts["lora"]["trainable"] == counts["lora"]["total"]
    assert counts["llm"]["trainable"] == 0
    with pytest.raises(ConfigError, match="no adapters"):
        m.set_trainable(("lora",))
    with pytest.raises(ConfigError, match="unknown parts"):
        m.set_trainable(("decoder",))


def test_mismatched_prompt_and_audio_are_clear_errors(model, batch):
    ids, feats, mask = batch["input_ids"], batch["input_features"], batch["input_features_mask"]
    text_only = ids.masked_fill(ids == model.audio_token_id, 7)
    with pytest.raises(InputError, match="no <sound> slot"):
        model(input_ids=text_only, input_features=feats, input_features_mask=mask)
    with pytest.raises(InputError, match="no audio was given"):
        model(input_ids=ids)
    with pytest.raises(InputError, match="slots but the audio yields"):
        model(input_ids=ids, input_features=feats[:-1], input_features_mask=mask[:-1])


def test_generate_stops_on_im_end_and_samples(model, batch):
    im_end = model.llm.tokenizer.convert_tokens_to_ids("<|im_end|>")

    # Raise the <|im_end|> logit so it always wins: generation must stop after one token.
    def favour_im_end(_module, _inputs, logits):
        logits[..., im_end] += 1e4
        return logits

    hook = model.llm.base.lm_head.register_forward_hook(favour_im_end)
    try:
        out = model.generate(
            input_ids=batch["input_ids"][:1],
            input_features=batch["input_features"][:2],
            input_features_mask=batch["input_features_mask"][:2],
            max_new_tokens=5,
        )
    finally:
        hook.remove()
    assert out.shape[1] == batch["input_ids"].shape[1] + 1 and out[0, -1] == im_end
    sampled = model.generate(
        input_ids=batch["input_ids"][:1],
        input_features=batch["input_features"][:2],
        input_features_mask=batch["input_features_mask"][:2],
        max_new_tokens=4,
        do_sample=True,
        top_k=5,
        repetition_penalty=1.2,
    )
    assert sampled.shape[1] <= batch["input_ids"].shape[1] + 4


def test_afnext_checkpoint_round_trip_with_lora(tmp_path, batch):
    m = build(
        lora={"r": 2, "target_modules": ["q_proj", "v_proj"]}, trainable=("lora", "connector")
    ).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.normal_()  # make the adapters matter
    m.save_pretrained(tmp_path / "ckpt")
    back = AudioLanguageModel.from_pretrained(tmp_path / "ckpt").eval()
    assert back.trainable == ("lora", "connector") and back.llm.has_lora
    with torch.no_grad():
        torch.testing.assert_close(back(**batch).logits, m(**batch).logits, atol=1e-5, rtol=0)


def test_sharded_checkpoint_and_weight_errors(tmp_path, model, batch):
    from afnext.storage import read_state_dict, write_state_dict

    model.save_pretrained(tmp_path / "ckpt")
    state = read_state_dict(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    files = write_state_dict(tmp_path / "ckpt", state, max_shard_bytes=200_000)
    assert len(files) > 2 and files[-1].name == "model.safetensors.index.json"
    back = AudioLanguageModel.from_pretrained(tmp_path / "ckpt").eval()
    with torch.no_grad():
        torch.testing.assert_close(back(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    # A missing and an unknown weight are both listed by name.
    state.pop("connector.linear_2.bias")
    state["connector.extra"] = torch.zeros(1)
    for f in files:
        f.unlink()
    write_state_dict(tmp_path / "ckpt", state)
    with pytest.raises(CheckpointError, match=r"connector\.linear_2\.bias.*connector\.extra"):
        AudioLanguageModel.from_pretrained(tmp_path / "ckpt")


def test_hf_export_refuses_compositions_transformers_lacks(tmp_path):
    m = build(connector=lambda in_dim, out_dim: FrameStackConnector(in_dim, out_dim, stack=2))
    with pytest.raises(CheckpointError, match="format='afnext'"):
        m.save_pretrained(tmp_path / "x", format="hf")
    assert not (tmp_path / "x").exists()
