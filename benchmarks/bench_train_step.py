"""Training steps of a full-width, reduced-depth AF-Next on 30 minutes of audio plus text, on one GPU.

AF-Next's widths and vocabulary (AF-Whisper large-v3: d 1280, 20 heads; RoTE; MLP; Qwen2.5-7B: hidden 3584,
28 / 4 heads, 151,672 rows) with 2 encoder and 2 LLM layers (``experiment=afnext_instruct`` composed with depth
overrides), everything trainable, ``afnext_varlen`` attention in the encoder and the LLM, the fused loss,
activation checkpointing, bfloat16 autocast over float32 master weights, fused AdamW. One sample: 30 min of audio
(60 windows, 45,000 audio tokens) and a question / answer. Prints peak memory and tokens per second (after warm-up
steps), with the loss of each step.

    python benchmarks/bench_train_step.py                 # on a GPU
    python benchmarks/bench_train_step.py --smoke         # CPU dry run: tiny widths, 60 s of audio
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch


def synthetic_audio(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Harmonics with a wandering pitch plus noise (deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * math.pi * np.cumsum(150 + 50 * np.sin(2 * math.pi * 0.1 * t)) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 5)) * 0.2 + 0.02 * rng.standard_normal(
        t.shape
    )
    return wave.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1800.0)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny widths, 60 s, CPU")
    args = parser.parse_args()

    from hydra.utils import instantiate

    from afnext.config import compose_config
    from afnext.data.processor import AudioProcessor
    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        overrides = ["experiment=tiny"]
        seconds = min(args.seconds, 60.0)
    else:
        overrides = [
            "experiment=afnext_instruct",
            "encoder.num_layers=2",
            "llm.config.num_hidden_layers=2",
            "llm.dtype=null",
            f"llm.tokenizer={TINY_TOKENIZER_DIR}",  # ids only: the vocabulary size is the real one
            "encoder.attn_implementation=afnext_varlen",
            "llm.attn_implementation=afnext_varlen",
        ]
        seconds = args.seconds
    cfg = compose_config("train", [*overrides, "model.loss_impl=fused"])
    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="all")
    model.set_trainable(("encoder", "connector", "llm"))
    model.llm.base.gradient_checkpointing_enable(
        gradient_checkpointing_kwargs={"use_reentrant": False}
    )
    tower = getattr(model.encoder, "tower", None)
    if tower is not None and getattr(tower, "supports_gradient_checkpointing", False):
        tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.float().to(device)
    processor = AudioProcessor.from_model(model, padding_side="right", max_seconds=seconds)
    conversation = [
        {"role": "user", "content": "<sound>Describe the recording in detail, with timestamps."},
        {"role": "assistant", "content": "A steady harmonic tone with slow pitch changes. " * 20},
    ]
    batch = processor([conversation], audio=[[synthetic_audio(seconds)]], return_labels=True)
    batch = {k: v.to(device) for k, v in batch.items()}
    tokens = int(batch["attention_mask"].sum())
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=device.type == "cuda"
    )
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{'smoke: ' if args.smoke else ''}{params / 1e9:.2f} B parameters, {batch['input_features'].shape[0]} "
        f"windows, {tokens:,} tokens ({seconds:.0f} s of audio), device {device}"
    )
    if device.type == "cuda":
        print(torch.cuda.get_device_name(), flush=True)
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        if step >= args.warmup:
            times.append(elapsed)
        print(f"step {step}: loss {float(out.loss.detach()):.4f}  {elapsed:.2f} s", flush=True)
    median = sorted(times)[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    print(
        f"peak memory {peak:.2f} GiB; median step {median:.2f} s; {tokens / median:,.0f} tokens/s"
    )


if __name__ == "__main__":
    main()
