"""HFCausalLM: any transformers causal LM by config or folder, audio tokens, chat template, LoRA."""

from __future__ import annotations

import shutil

import pytest
import torch

from afnext.errors import CheckpointError, ConfigError
from afnext.llms.hf import HFCausalLM
from afnext.llms.tokenizer import CHATML_TEMPLATE, TINY_TOKENIZER_DIR
from tests.helpers import TINY_LLM

TINY = {k: v for k, v in TINY_LLM.items() if k != "model_type"}


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3", "llama"])
def test_builds_from_config_with_audio_tokens(model_type):
    llm = HFCausalLM(config={"model_type": model_type, **TINY})
    ids = llm.special_ids
    assert len(set(ids.values())) == 3 and set(ids) == {"audio", "audio_bos", "audio_eos"}
    assert llm.hidden_size == 32
    out = llm(inputs_embeds=llm.embed(torch.tensor([[1, 7, 9]])))
    assert out.logits.shape == (1, 3, 1024)


def test_adds_missing_tokens_and_resizes(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]").save_pretrained(tmp_path)
    Qwen2ForCausalLM(Qwen2Config(**{**TINY, "vocab_size": 3})).save_pretrained(tmp_path)
    llm = HFCausalLM(path=str(tmp_path))
    # transformers may add the tokenizer class's own defaults (Qwen2's <|endoftext|>) on load.
    assert llm.base.get_input_embeddings().num_embeddings == len(llm.tokenizer) >= 3 + 5
    for token in ("<|im_start|>", "<|im_end|>", "<sound>", "<|sound_bos|>", "<|sound_eos|>"):
        assert llm.tokenizer.convert_tokens_to_ids(token) >= 3
    assert llm.tokenizer.chat_template == CHATML_TEMPLATE
    assert llm.tokenizer.convert_tokens_to_ids("<sound>") >= 3


def test_chat_template_renders_af3_prompt():
    llm = HFCausalLM(config={"model_type": "qwen2", **TINY})
    conv = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Why?"}, {"type": "audio", "path": "a.wav"}],
        }
    ]
    text = llm.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<sound>Why?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_the_tokenizer_keeps_its_own_template_and_chatml_is_the_fallback():
    """Prompts follow the LLM: a tokenizer's own template (Llama 3's here) is kept; one without a template gets
    ChatML; llm.chat_template=chatml forces ChatML."""
    from transformers import AutoTokenizer

    from afnext.llms.tokenizer import ensure_audio_tokens

    tok = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    llama = "{% for m in messages %}<|start_header_id|>{{ m['content'] }}{% endfor %}"
    tok.chat_template = llama
    ensure_audio_tokens(tok)
    assert tok.chat_template == llama
    ensure_audio_tokens(tok, "chatml")
    assert tok.chat_template == CHATML_TEMPLATE
    tok.chat_template = None
    ensure_audio_tokens(tok)
    assert tok.chat_template == CHATML_TEMPLATE


def test_lora_adapters_are_separate_parameters():
    llm = HFCausalLM(
        config={"model_type": "qwen2", **TINY},
        lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    )
    names = [n for n, _ in llm.named_parameters()]
    assert any("lora_A" in n for n in names)
    assert llm.has_lora and llm.base.__class__.__name__ == "Qwen2ForCausalLM"


@pytest.mark.parametrize(
    "attn",
    [
        "eager",
        pytest.param(
            "flex_attention",
            marks=[
                pytest.mark.slow,  # compiled on first use: ~14 s on 2 cores
                pytest.mark.skipif(
                    not (shutil.which("g++") or shutil.which("clang++")),
                    reason="flex_attention on the CPU is compiled by inductor, which needs a C++ compiler",
                ),
            ],
        ),
    ],
)
def test_attention_implementation_is_selectable_and_gives_the_same_logits(attn):
    """transformers' attn_implementation switch: each choice reaches the model and matches sdpa on a batch with
    left padding (flex_attention in inference only: torch has no flex backward on the CPU)."""
    config = {"model_type": "qwen2", **TINY, "num_hidden_layers": 2}
    ids = torch.tensor([[1, 7, 9, 11, 3], [5, 6, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    logits = {}
    for name in ("sdpa", attn):
        torch.manual_seed(0)
        llm = HFCausalLM(config=config, attn_implementation=name)
        assert llm.model.config._attn_implementation == name
        with torch.no_grad():
            logits[name] = llm(inputs_embeds=llm.embed(ids), attention_mask=mask).logits
    torch.testing.assert_close(logits[attn][0], logits["sdpa"][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits[attn][1, 2:], logits["sdpa"][1, 2:], rtol=0, atol=1e-5)


def test_a_large_vocabulary_needs_its_tokenizer():
    """No silent fallback to the bundled 1k-token tokenizer for a full-size vocabulary, except on meta
    (parameter counts) or when asked for by path."""
    config = {"model_type": "qwen2", **TINY, "vocab_size": 152064}
    with pytest.raises(ConfigError, match=r"vocab_size=152064 but no llm\.tokenizer"):
        HFCausalLM(config=config)
    with torch.device("meta"):
        assert HFCausalLM(config=config).model.config.vocab_size == 152064
    assert HFCausalLM(config=config, tokenizer=str(TINY_TOKENIZER_DIR)).hidden_size == 32


def test_bad_arguments_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        HFCausalLM()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        HFCausalLM(path=str(tmp_path))
    with pytest.raises(ConfigError, match="model_type"):
        HFCausalLM(config={"hidden_size": 8})


def test_bundled_tokenizer_is_loadable_and_small():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    assert len(tok) == 1024
    text = "How many beeps? <t>1.5-2.25</t>"
    assert tok.decode(tok(text)["input_ids"]) == text
