"""The processor builds exactly what transformers' AF3 / Music Flamingo processors build."""

from __future__ import annotations

import pytest
import torch

from afnext.data.processor import IGNORE_INDEX, AudioProcessor
from afnext.encoders.whisper import AFWhisperEncoder
from afnext.errors import AudioError, ConfigError, InputError
from tests.helpers import chat, tone_mix


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR

    return AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)


@pytest.mark.parametrize("boundary", [True, False], ids=["musicflamingo", "af3"])
def test_matches_transformers_processor(tokenizer, boundary):
    from transformers import (
        AudioFlamingo3Processor,
        MusicFlamingoProcessor,
        WhisperFeatureExtractor,
    )

    cls = MusicFlamingoProcessor if boundary else AudioFlamingo3Processor
    ref = cls(WhisperFeatureExtractor(feature_size=128), tokenizer, max_audio_len=1800)
    ours = AudioProcessor(
        tokenizer, AFWhisperEncoder.output_lengths, audio_boundary_tokens=boundary
    )
    audio = [tone_mix(2.5, 1), tone_mix(61.3, 2)]
    convs = [chat("What is it?"), chat("Count the beeps, please.")]
    texts = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs
    ]
    expected = ref(text=texts, audio=audio, padding=True)
    got = ours(
        [
            [{"role": "user", "content": [{"type": "audio", "audio": a}, c[0]["content"][1]]}]
            for a, c in zip(audio, convs)
        ]
    )
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["attention_mask"], expected["attention_mask"])
    assert torch.equal(got["input_features_mask"].long(), expected["input_features_mask"].long())
    torch.testing.assert_close(got["input_features"], expected["input_features"], atol=1e-4, rtol=0)


def test_labels_cover_assistant_turns_only(tokenizer):
    proc = AudioProcessor(tokenizer, AFWhisperEncoder.output_lengths, padding_side="right")
    conv = [
        {
            "role": "user",
            "content": [{"type": "audio", "audio": tone_mix(1.0)}, {"type": "text", "text": "Q1"}],
        },
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "second"},
    ]
    out = proc([conv], return_labels=True)
    ids, labels = out["input_ids"][0], out["labels"][0]
    kept = tokenizer.decode(ids[labels != IGNORE_INDEX])
    assert kept == "first answer<|im_end|>second<|im_end|>"
    assert (labels[ids == proc.audio_token_id] == IGNORE_INDEX).all()
    # Training conversations end with the answer: no dangling generation prompt.
    assert tokenizer.decode(ids).endswith("second<|im_end|>\n")


def test_string_content_with_placeholders_and_several_audios(tokenizer):
    proc = AudioProcessor(tokenizer, AFWhisperEncoder.output_lengths)
    conv = [{"role": "user", "content": "<sound> then <sound>: same speaker?"}]
    out = proc([conv], audio=[[tone_mix(1.0), tone_mix(31.0)]])
    assert out["input_features"].shape[0] == 3  # 1 + 2 windows
    assert int((out["input_ids"] == proc.audio_bos_id).sum()) == 2
    assert int((out["input_ids"] == proc.audio_token_id).sum()) == 25 + 750 + 25


def test_placeholder_and_audio_must_agree(tokenizer):
    proc = AudioProcessor(tokenizer, AFWhisperEncoder.output_lengths)
    with pytest.raises(InputError, match="no <sound> placeholder"):
        proc([[{"role": "user", "content": "no slot"}]], audio=[[tone_mix(1.0)]])
    with pytest.raises(InputError, match="1 <sound> placeholders but 0 audio"):
        proc([[{"role": "user", "content": "<sound> where is it?"}]])
    with pytest.raises(InputError, match="max_length"):
        proc([[{"role": "user", "content": "a long prompt " * 5}]], max_length=3)


def test_audio_too_short_for_one_token_is_an_error_naming_it(tokenizer, tmp_path):
    """AF-Whisper needs 3 frames for one token: 320 samples (2 frames) is a clear error naming the file, not
    a prompt without slots further down; 321 samples gives one token."""
    import soundfile

    proc = AudioProcessor(tokenizer, AFWhisperEncoder.output_lengths)
    prompt = [[{"role": "user", "content": "<sound> what?"}]]
    clip = tmp_path / "click.wav"
    soundfile.write(clip, 0.1 * torch.randn(320).numpy(), 16000)
    with pytest.raises(
        AudioError, match=r"click\.wav: 320 samples \(20\.0 ms\).*at least 321 samples"
    ):
        proc(prompt, audio=[[str(clip)]])
    with pytest.raises(AudioError, match=r"<array>: 320 samples"):
        proc(prompt, audio=[[0.1 * torch.randn(320)]])
    out = proc(prompt, audio=[[0.1 * torch.randn(321)]])
    assert int((out["input_ids"] == proc.audio_token_id).sum()) == 1


LLAMA3_TEMPLATE = (  # Meta-Llama-3-8B-Instruct's chat template
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def test_a_llama3_backbone_trains_on_the_llama3_format():
    """Prompts follow the LLM: the tokenizer's Llama 3 template renders the turns, and the labels are each
    assistant message with its <|eot_id|>."""
    from transformers import AutoTokenizer

    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR, ensure_audio_tokens

    tok = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                "<|begin_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ]
        },
        replace_extra_special_tokens=False,
    )
    tok.bos_token = "<|begin_of_text|>"
    tok.chat_template = LLAMA3_TEMPLATE
    ensure_audio_tokens(tok)
    assert tok.chat_template == LLAMA3_TEMPLATE
    proc = AudioProcessor(tok, AFWhisperEncoder.output_lengths, padding_side="right")
    conv = [
        {"role": "user", "content": "<sound>What is it?"},
        {"role": "assistant", "content": "A tone."},
        {"role": "user", "content": "Louder?"},
        {"role": "assistant", "content": "No."},
    ]
    out = proc([conv], audio=[[tone_mix(1.0)]], return_labels=True)
    ids, labels = out["input_ids"][0], out["labels"][0]
    text = tok.decode(ids, skip_special_tokens=False)
    assert text.startswith(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|sound_bos|><sound>"
    )
    assert "<|im_start|>" not in text
    assert (
        tok.decode(ids[labels != IGNORE_INDEX], skip_special_tokens=False)
        == "A tone.<|eot_id|>No.<|eot_id|>"
    )


def test_a_template_that_rewrites_earlier_turns_is_refused_with_the_fix(tokenizer):
    """A template that renders a turn differently once a later turn follows (as Qwen3's drops earlier <think>
    blocks) cannot be labelled turn by turn: the error says to train on ChatML."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
        "<|im_start|>assistant\n(earlier)<|im_end|>\n{% else %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    proc = AudioProcessor(tok, AFWhisperEncoder.output_lengths)
    conv = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]
    with pytest.raises(ConfigError, match=r"llm\.chat_template=chatml"):
        proc([conv], return_labels=True)
