"""Shared fixtures: fixed seeds, a temp folder per test, no network, W&B offline."""

from __future__ import annotations

import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _interpret_triton_without_cuda() -> None:
    """Let the kernel tests run Triton on CPU in this process (and so on every xdist worker).

    ``TRITON_INTERPRET=1`` only works when set before triton is first imported, and transformers imports triton,
    so the kernels folder's own conftest is too late in a whole-suite run. Nothing else changes: ``impl="auto"``
    still picks the PyTorch reference for CPU tensors.

    No GPU is told from the device files, not ``torch.cuda``: importing torch here would hold up the xdist
    controller (which runs no tests) by a whole torch import before it starts the workers. On a GPU machine with
    a CPU build of torch this leaves the variable unset, and ``tests/kernels/conftest.py`` decides (it sets it
    itself, or reruns the folder in a child process).
    """
    import glob
    import sys

    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1")
    if (hidden or not glob.glob("/dev/nvidia[0-9]*")) and "triton" not in sys.modules:
        os.environ.setdefault("TRITON_INTERPRET", "1")


_interpret_triton_without_cuda()


@pytest.fixture(autouse=True)
def _seed() -> None:
    import numpy as np
    import torch

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Folders of tiny random checkpoints for the presets that load from a path."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig, WhisperModel

    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR

    root = tmp_path_factory.mktemp("tiny_checkpoints")
    whisper = WhisperModel(
        WhisperConfig(
            num_mel_bins=128,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            vocab_size=100,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
        )
    )
    whisper.save_pretrained(root / "whisper")
    qwen = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=1024,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    qwen.save_pretrained(root / "qwen")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR).save_pretrained(root / "qwen")
    return {"whisper_large_v3_pretrained": root / "whisper", "qwen2_5_7b_pretrained": root / "qwen"}
