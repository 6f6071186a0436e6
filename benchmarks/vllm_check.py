"""vLLM check: vLLM's greedy answers for an exported model equal afnext's.

A tiny AF-Next-shaped model (AF-Whisper + RoTE + the AF3 MLP projector + Qwen2, random, seeded; head sizes
vLLM's attention kernels take) is built, or ``--checkpoint`` names one, and written with ``afnext export
--format hf`` (``afnext.inference.export.export_hf``). vLLM loads that folder
(``MusicFlamingoForConditionalGeneration``; AF3 folders as ``AudioFlamingo3ForConditionalGeneration``) and
answers prompts with audio greedily; afnext's inference engine answers the same prompts (the same rendered chat
text, the same audio). The script prints each pair and exits 1 if any differ.

Needs a CUDA GPU and vLLM (``pip install vllm``); without them it says so and exits 0 (skipped), which is what
happens on the project's CPU machines. Run from the repository root::

    python benchmarks/vllm_check.py                       # the tiny model
    python benchmarks/vllm_check.py --checkpoint RUN      # an exportable afnext model of your own
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np


def skip_reason() -> str | None:
    """Why the check cannot run here, or ``None``."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install vllm, on a machine with a CUDA GPU)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (vLLM's audio models run on GPUs)"
    return None


def tiny_model(seed: int = 0):
    """A random AF-Next-shaped model that exports to transformers' Music Flamingo class (head dim 64)."""
    import torch

    from afnext import AudioLanguageModel
    from afnext.connectors.mlp import MLPConnector
    from afnext.connectors.rote import RotaryTimeEmbedding
    from afnext.encoders.whisper import AFWhisperEncoder
    from afnext.llms.hf import HFCausalLM

    torch.manual_seed(seed)
    encoder = AFWhisperEncoder(d_model=128, num_layers=2, num_heads=2, ffn_dim=256)
    llm = HFCausalLM(
        config={
            "model_type": "qwen2",
            "vocab_size": 1024,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 8192,
        }
    )
    model = AudioLanguageModel.build(encoder, MLPConnector, llm, RotaryTimeEmbedding).eval()
    with torch.no_grad():
        model.llm.base.lm_head.weight.mul_(
            30.0
        )  # decisive greedy choices, as a trained model makes
    return model


def clips(count: int, seed: int = 0) -> list[np.ndarray]:
    """Tones with noise, 1-40 s (the last over one 30 s window)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        seconds = 40.0 if i == count - 1 else float(rng.uniform(1.0, 12.0))
        t = np.arange(int(16000 * seconds)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 3000) * t) + 0.03 * rng.standard_normal(
            t.shape
        )
        out.append(wave.astype(np.float32))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", default=None, help="an exportable afnext model (default: tiny random)"
    )
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repetition-penalty", type=float, default=1.2)
    args = parser.parse_args()
    reason = skip_reason()
    if reason is not None:
        print(f"vllm_check: skipped: {reason}")
        return 0
    import torch
    from vllm import LLM, SamplingParams

    from afnext.data.processor import AudioProcessor
    from afnext.inference.engine import InferenceEngine, Request
    from afnext.inference.export import export_hf
    from afnext.inference.generation import GenerationSettings
    from afnext.interop import resolve_checkpoint
    from afnext.model import AudioLanguageModel

    if args.checkpoint:
        model = AudioLanguageModel.from_pretrained(resolve_checkpoint(args.checkpoint)).eval()
    else:
        model = tiny_model()
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty
    )
    processor = AudioProcessor.from_model(model)
    audio = clips(args.prompts)
    messages = [
        [{"role": "user", "content": f"<sound>Question {i}: what is heard?"}]
        for i in range(len(audio))
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_hf(model, Path(tmp) / "hf", generation=settings)
        engine = InferenceEngine(model.to("cuda"), processor, settings=settings)
        ours = [r.text for r in engine.generate([Request(m, [a]) for m, a in zip(messages, audio)])]
        llm = LLM(
            model=str(folder),
            dtype="float32",
            enforce_eager=True,
            max_model_len=4096,
            limit_mm_per_prompt={"audio": 1},
            seed=0,
        )
        params = SamplingParams(
            temperature=0.0,
            max_tokens=args.max_new_tokens,
            repetition_penalty=args.repetition_penalty,
            stop_token_ids=model.llm.stop_token_ids(),
            skip_special_tokens=True,
        )
        prompts = [
            {
                "prompt": processor.render(m, add_generation_prompt=True)[0],
                "multi_modal_data": {"audio": (a, 16000)},
            }
            for m, a in zip(messages, audio)
        ]
        theirs = [out.outputs[0].text for out in llm.generate(prompts, params)]
    same = 0
    for i, (a, b) in enumerate(zip(ours, theirs)):
        same += a == b
        print(f"[{i}] {'same' if a == b else 'DIFFERENT'}\n  afnext: {a!r}\n  vLLM:   {b!r}")
    print(f"vllm_check: {same}/{len(ours)} greedy answers equal (torch {torch.__version__})")
    return 0 if same == len(ours) else 1


if __name__ == "__main__":
    sys.exit(main())
