"""Tokenizer helpers: afnext's audio tokens, the ChatML template (for tokenizers without one), the bundled tiny
tokenizer.

Real runs use the LLM's own tokenizer (Qwen2.5's already holds ``<sound>`` = 151669,
``<|sound_bos|>`` = 151670 and ``<|sound_eos|>`` = 151671 in AF3 / AF-Next checkpoints). Tiny models for
tests and the CPU demo use a small byte-level BPE tokenizer shipped in ``afnext/llms/assets/`` (trained with
:func:`train_bpe_tokenizer`), loaded through the same ``AutoTokenizer.from_pretrained`` path.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "AUDIO_BOS_TOKEN",
    "AUDIO_EOS_TOKEN",
    "AUDIO_TOKEN",
    "CHATML_TEMPLATE",
    "DEFAULT_SYSTEM_PROMPT",
    "IM_END",
    "IM_START",
    "TINY_TOKENIZER_DIR",
    "ensure_audio_tokens",
    "train_bpe_tokenizer",
]

AUDIO_TOKEN = "<sound>"
AUDIO_BOS_TOKEN = "<|sound_bos|>"
AUDIO_EOS_TOKEN = "<|sound_eos|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
TINY_TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "tiny_tokenizer"

# ChatML as AF3's processor renders it (transformers tests/models/audioflamingo3/test_processing_*):
# a default system turn, and each user turn's audio placeholders before its text.
CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'audio' -%}{{ '<sound>' }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def ensure_audio_tokens(tokenizer: Any, chat_template: str | None = None) -> list[str]:
    """Add afnext's audio tokens to a tokenizer where missing, and give it a chat template if it has none.

    Prompts follow the LLM (the processor renders them with the tokenizer's own template: ChatML for Qwen and
    AF-Next, the Llama 3 format for Llama 3, ...). A tokenizer without a template gets ChatML, AF-Next's format
    (and ChatML's tokens, where missing).

    Args:
        tokenizer: A transformers tokenizer.
        chat_template: ``"chatml"`` (afnext's ChatML, whatever the tokenizer has), a Jinja template, or None
            (keep the tokenizer's own).

    Returns:
        The tokens that were added (the caller resizes the LLM's embeddings if the vocabulary grew).
    """
    template = getattr(tokenizer, "chat_template", None)
    if chat_template == "chatml" or (chat_template is None and not isinstance(template, str)):
        tokenizer.chat_template = CHATML_TEMPLATE
    elif chat_template is not None:
        tokenizer.chat_template = chat_template
    vocab = tokenizer.get_vocab()
    wanted = [AUDIO_TOKEN, AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN]
    if IM_START in tokenizer.chat_template:
        wanted = [IM_START, IM_END, *wanted]
    missing = [t for t in wanted if t not in vocab]
    if missing:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": missing}, replace_extra_special_tokens=False
        )
    if tokenizer.pad_token is None:
        vocab = tokenizer.get_vocab()
        tokenizer.pad_token = next(
            (t for t in (ENDOFTEXT, IM_END) if t in vocab), tokenizer.eos_token or AUDIO_EOS_TOKEN
        )
    return missing


def train_bpe_tokenizer(corpus: Iterable[str], out_dir: str | Path, vocab_size: int = 1024) -> Path:
    """Train a small byte-level BPE tokenizer with ChatML and audio special tokens, save it for transformers.

    Args:
        corpus: Training text.
        out_dir: Folder to write (``tokenizer.json``, ``tokenizer_config.json``).
        vocab_size: Target vocabulary size including the special tokens.

    Returns:
        ``out_dir``, loadable with ``transformers.AutoTokenizer.from_pretrained``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [ENDOFTEXT, IM_START, IM_END, AUDIO_TOKEN, AUDIO_BOS_TOKEN, AUDIO_EOS_TOKEN]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        additional_special_tokens=specials[1:],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHATML_TEMPLATE
    out_dir = Path(out_dir)
    fast.save_pretrained(out_dir)
    return out_dir
