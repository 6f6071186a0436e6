"""``AudioProcessor.decode`` / ``batch_decode`` on what ``generate`` returns, with the bundled tiny tokenizer.

A tiny random model is steered (through a hook on its LM head) to answer known texts of different lengths,
so the decoded strings are known exactly: the prompt, the audio slots, ``<|im_end|>`` and the padding of
the row that stopped first must all be gone.
"""

from __future__ import annotations

import pytest
import torch

from afnext import AudioLanguageModel
from afnext.connectors.mlp import MLPConnector
from afnext.data.processor import AudioProcessor
from afnext.encoders.whisper import AFWhisperEncoder
from afnext.llms.hf import HFCausalLM
from afnext.llms.tokenizer import TINY_TOKENIZER_DIR
from tests.helpers import TINY_LLM, tone_mix

LLM = TINY_LLM
ANSWERS = ["Two beeps.", "A dog barks twice, then a car passes."]


@pytest.fixture(scope="module")
def generated():
    """(processor, generate's output, prompt length) for two prompts with audio and known answers."""
    torch.manual_seed(0)
    enc = AFWhisperEncoder(
        d_model=16, num_layers=1, num_heads=2, ffn_dim=32, max_source_positions=50
    )
    model = AudioLanguageModel.build(enc, MLPConnector, HFCausalLM(config=LLM)).eval()
    assert model.llm.tokenizer.name_or_path == str(TINY_TOKENIZER_DIR)
    proc = AudioProcessor.from_model(model)
    tok = proc.tokenizer
    im_end = model.llm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    targets = [tok(a, add_special_tokens=False)["input_ids"] + [im_end] for a in ANSWERS]
    assert len(targets[0]) < len(targets[1])
    convs = [
        [
            {
                "role": "user",
                "content": [
                    {"type": "audio", "audio": tone_mix(0.9, i)},
                    {"type": "text", "text": q},
                ],
            }
        ]
        for i, q in enumerate(["How many beeps?", "What happens?"])
    ]
    inputs = proc(convs)
    step = [0]

    def steer(_module, _inputs, logits):
        for row, target in enumerate(targets):
            if step[0] < len(target):
                logits[row, -1, target[step[0]]] = logits[row, -1].amax() + 100.0
        step[0] += 1
        return logits

    handle = model.llm.base.lm_head.register_forward_hook(steer)
    try:
        out = model.generate(**inputs, max_new_tokens=len(targets[1]) + 3, do_sample=False)
    finally:
        handle.remove()
    L = inputs["input_ids"].shape[1]
    # The steering worked: row 1 ends on <|im_end|>, row 0 stopped early and is padded.
    assert out.shape[1] == L + len(targets[1])
    assert out[0, L : L + len(targets[0])].tolist() == targets[0]
    assert (out[0, L + len(targets[0]) :] == tok.pad_token_id).all()
    assert out[1, L:].tolist() == targets[1]
    return proc, out, L


def test_batch_decode_strips_prompt_and_special_tokens(generated):
    proc, out, L = generated
    assert proc.batch_decode(out, prompt_length=L) == ANSWERS


def test_batch_decode_keeps_special_tokens_when_asked(generated):
    proc, out, L = generated
    texts = proc.batch_decode(out, prompt_length=L, skip_special_tokens=False)
    assert texts[1] == ANSWERS[1] + "<|im_end|>"
    pad = proc.tokenizer.pad_token
    n_pad = len(proc.tokenizer(ANSWERS[1])["input_ids"]) - len(
        proc.tokenizer(ANSWERS[0])["input_ids"]
    )
    assert texts[0] == ANSWERS[0] + "<|im_end|>" + pad * n_pad


def test_batch_decode_without_prompt_length_keeps_the_prompt_text(generated):
    proc, out, _ = generated
    texts = proc.batch_decode(out)
    for text, answer, question in zip(texts, ANSWERS, ["How many beeps?", "What happens?"]):
        assert text.startswith("system\nYou are a helpful assistant.")
        assert question in text and text.endswith(answer)
        assert "<sound>" not in text and "<|im_end|>" not in text


def test_decode_one_row(generated):
    proc, out, L = generated
    assert proc.decode(out[1, L:]) == ANSWERS[1]
    assert proc.decode(out[0, L:].tolist()) == ANSWERS[0]
    assert proc.decode(out[1, L:], skip_special_tokens=False) == ANSWERS[1] + "<|im_end|>"
