"""Peak memory of one training step (forward + backward) with the fused loss against the naive one.

The model is an ``AudioLanguageModel`` forward with labels, as training calls it: ``model.loss_impl=fused`` (the
next-token loss from the final hidden states with ``afnext_kernels.linear_cross_entropy``, no logits built) or
``naive`` (the LLM's own loss over the full ``(tokens, vocabulary)`` logits). Every position has a target (the
worst case). Each implementation runs in a fresh child process; on CPU the figure is the rise of the process's
peak resident memory during the step (``ru_maxrss``), on CUDA ``torch.cuda.max_memory_allocated`` above the
memory in use before the step. A child that runs out of memory is reported as such.

    python benchmarks/bench_loss_memory.py                      # CPU: 16,384 tokens x 151,672 vocab, hidden 64
    python benchmarks/bench_loss_memory.py --tokens 45000 --hidden 3584 --device cuda   # the GPU figure
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

KIB = 1024


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB  # Linux: KiB


def child(args: argparse.Namespace) -> dict:
    if args.memory_limit_gib:
        # A cap on the address space: past it an allocation fails in this process (reported as out of memory)
        # instead of the machine's OOM killer picking a victim.
        cap = int(args.memory_limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch

    from afnext.connectors.mlp import MLPConnector
    from afnext.encoders.whisper import AFWhisperEncoder
    from afnext.llms.hf import HFCausalLM
    from afnext.llms.tokenizer import TINY_TOKENIZER_DIR
    from afnext.model import AudioLanguageModel

    torch.manual_seed(0)
    device = torch.device(args.device)
    heads = max(1, args.hidden // 64) if args.hidden >= 64 else 4
    llm = HFCausalLM(
        config={
            "model_type": "qwen2",
            "vocab_size": args.vocab,
            "hidden_size": args.hidden,
            "intermediate_size": 2 * args.hidden,
            "num_hidden_layers": 1,
            "num_attention_heads": heads,
            "num_key_value_heads": 1 if heads > 1 else heads,
            "max_position_embeddings": max(32768, args.tokens + 1),
            "tie_word_embeddings": False,
        },
        tokenizer=args.tokenizer or str(TINY_TOKENIZER_DIR),  # ids only: any tokenizer will do
        attn_implementation="sdpa",
    )
    encoder = AFWhisperEncoder(d_model=32, num_layers=1, num_heads=2, ffn_dim=64)
    model = AudioLanguageModel.build(encoder, MLPConnector, llm, None, loss_impl=args.impl)
    model.to(device=device, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    ids = torch.randint(0, args.vocab, (1, args.tokens), device=device)
    ids[ids == model.audio_token_id] = 0  # text only: no <sound> slot
    labels = ids.clone()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_peak_bytes()
    start = time.perf_counter()
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    out.loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _rss_peak_bytes() - before
    return {
        "impl": args.impl,
        "loss": float(out.loss),
        "step_peak_bytes": int(peak),
        "seconds": round(time.perf_counter() - start, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--vocab", type=int, default=151672)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 weights (GPU figure)")
    parser.add_argument("--impls", default="fused,naive")
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer folder (default: afnext's tiny one)"
    )
    parser.add_argument(
        "--memory-limit-gib",
        type=float,
        default=20.0,
        help="address-space cap per child on CPU (0: none); a step that needs more is reported as out of memory",
    )
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl:
        print(json.dumps(child(args)))
        return
    results = {}
    for impl in args.impls.split(","):
        command = [sys.executable, __file__, "--impl", impl, *sys.argv[1:]]
        run = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        if run.returncode != 0:
            text = run.stderr.lower()
            killed = (
                run.returncode in (-9, 137) or "out of memory" in text or "can't allocate" in text
            )
            cap = f" (over the {args.memory_limit_gib:g} GiB cap)" if args.memory_limit_gib else ""
            results[impl] = {
                "impl": impl,
                "error": f"out of memory{cap}" if killed else run.stderr[-800:],
            }
        else:
            results[impl] = json.loads(run.stdout.strip().splitlines()[-1])
    print(
        f"one training step, {args.tokens:,} tokens x {args.vocab:,} vocabulary, hidden {args.hidden}, "
        f"{args.device}{' bf16' if args.bf16 else ''}"
    )
    for impl, r in results.items():
        if "error" in r:
            print(f"  {impl:>6}: {r['error']}")
        else:
            print(
                f"  {impl:>6}: step peak {r['step_peak_bytes'] / 2**30:7.2f} GiB  loss {r['loss']:.4f}  "
                f"{r['seconds']:.1f} s"
            )
    fused, naive = results.get("fused", {}), results.get("naive", {})
    if "step_peak_bytes" in fused and "error" in naive and args.memory_limit_gib:
        bound = fused["step_peak_bytes"] / (args.memory_limit_gib * 2**30)
        print(f"  fused / naive peak: < {bound:.3f} (naive needs more than the cap)")
    if "step_peak_bytes" in fused and "step_peak_bytes" in naive:
        ratio = fused["step_peak_bytes"] / max(naive["step_peak_bytes"], 1)
        print(f"  fused / naive peak: {ratio:.3f} (1/{1 / ratio:.1f})")
        print(f"  loss difference: {abs(fused['loss'] - naive['loss']):.2e}")


if __name__ == "__main__":
    main()
