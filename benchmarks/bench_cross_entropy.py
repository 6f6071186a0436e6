"""Fused linear cross-entropy against ``F.cross_entropy(hidden @ weight.T, labels)``: peak memory and time.

GPU (default when CUDA is present): 45,000 tokens x 152,064 vocabulary x hidden 3,584 in bfloat16 (AF-Next's
30-minute pack through Qwen2.5-7B's LM head), forward + backward, peak memory above the inputs
(``torch.cuda.max_memory_allocated``) and time (``triton.testing.do_bench``). Targets: peak at most 1/8 of the
naive path's, speed at least 0.9x.

CPU (``--device cpu``): 4,096 x 152,064 x 512 in float32, forward + backward. Each variant runs in its own
child process and reports its peak resident set size above the RSS it had after building the inputs (the
kernel's peak-RSS mark is reset then through ``/proc/self/clear_refs`` and read back from ``VmHWM``, falling back
to ``ru_maxrss``; honest for CPU tensors, which live in process memory). Target: peak at most 1/5 of the naive
path's.

Run: ``python benchmarks/bench_cross_entropy.py`` (``--smoke`` or ``BENCH_SMOKE=1`` for tiny shapes; a CPU smoke
run also times the Triton kernel through ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

SMOKE = os.environ.get("BENCH_SMOKE") == "1" or "--smoke" in sys.argv
if SMOKE and not torch.cuda.is_available():
    os.environ.setdefault(
        "TRITON_INTERPRET", "1"
    )  # before triton is first imported (kernels load lazily)


def _inputs(tokens: int, vocab: int, hidden: int, device: str, dtype: torch.dtype):
    gen = torch.Generator(device=device).manual_seed(0)
    h = (
        torch.randn(tokens, hidden, device=device, dtype=dtype, generator=gen) * 0.5
    ).requires_grad_()
    w = (
        torch.randn(vocab, hidden, device=device, dtype=dtype, generator=gen) * hidden**-0.5
    ).requires_grad_()
    y = torch.randint(0, vocab, (tokens,), device=device, generator=gen)
    y[::7] = -100
    return h, w, y


def _variant(name: str):
    from afnext_kernels import linear_cross_entropy

    if name == "naive":
        return lambda h, w, y: F.cross_entropy(h @ w.T, y)
    impl = {"afnext-triton": "triton", "afnext-reference": "reference"}[name]
    return lambda h, w, y: linear_cross_entropy(h, w, y, impl=impl)


def _child(args: argparse.Namespace) -> None:
    """Run one CPU variant and print JSON: seconds, peak RSS above the post-setup RSS, loss."""
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    h, w, y = _inputs(args.tokens, args.vocab, args.hidden, "cpu", torch.float32)
    fn = _variant(args.child)
    if args.child == "afnext-triton":  # compile / warm the interpreter on a slice first
        fn(h[:2].detach(), w.detach(), y[:2])
    base = _rss_bytes()
    hwm_reset = _reset_peak_rss()
    start = time.perf_counter()
    loss = fn(h, w, y)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = (_peak_rss_bytes() if hwm_reset else _maxrss_bytes()) - base
    print(json.dumps({"seconds": seconds, "peak": peak, "loss": loss.item()}))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return _maxrss_bytes()


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu(args: argparse.Namespace) -> None:
    print(
        f"CPU, float32, forward + backward: {args.tokens} tokens x {args.vocab} vocab x hidden {args.hidden}"
    )
    print(
        f"{'variant':<18}{'time s':>10}{'peak MiB':>12}{'loss':>12}{'time ratio':>12}{'memory ratio':>14}"
    )
    results = {}
    names = ["naive", "afnext-reference"] + (["afnext-triton"] if SMOKE else [])
    for name in names:
        cmd = [sys.executable, __file__, "--device", "cpu", "--child", name,
               "--tokens", str(args.tokens), "--vocab", str(args.vocab), "--hidden", str(args.hidden)]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.child_timeout)
        except subprocess.TimeoutExpired:
            print(f"{name:<18}TIMED OUT after {args.child_timeout:g} s (raise --child-timeout)")
            continue
        if proc.returncode:
            print(
                f"{name:<18}FAILED: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}"
            )
            continue
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = results.get("naive")
    for name, r in results.items():
        t_ratio = f"{base['seconds'] / r['seconds']:.2f}x" if base else "-"
        m_ratio = f"1/{base['peak'] / max(r['peak'], 1):.1f}" if base else "-"
        print(
            f"{name:<18}{r['seconds']:>10.2f}{r['peak'] / 2**20:>12.0f}{r['loss']:>12.5f}{t_ratio:>12}{m_ratio:>14}"
        )
    if base and "afnext-reference" in results:
        ratio = base["peak"] / max(results["afnext-reference"]["peak"], 1)
        print(f"target peak <= 1/5 of naive: {'MET' if ratio >= 5 else 'NOT MET'} (1/{ratio:.1f})")


def _gpu(args: argparse.Namespace) -> None:
    import triton.testing

    dtype = torch.bfloat16
    print(f"GPU {torch.cuda.get_device_name()}, bf16, forward + backward: {args.tokens} tokens x {args.vocab} vocab "
          f"x hidden {args.hidden}")  # fmt: skip
    print(
        f"{'variant':<18}{'time ms':>10}{'peak GiB':>10}{'loss':>12}{'speed vs naive':>16}{'memory vs naive':>17}"
    )
    results = {}
    for name in ["naive", "afnext-triton", "afnext-reference"]:
        try:
            h, w, y = _inputs(args.tokens, args.vocab, args.hidden, "cuda", dtype)
            fn = _variant(name)

            def step(fn=fn, h=h, w=w, y=y):
                loss = fn(h, w, y)
                loss.backward()
                return loss

            loss = step()  # warm-up (compiles the Triton kernel)
            h.grad = w.grad = None
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - before
            ms = triton.testing.do_bench(
                step, warmup=25, rep=max(args.rep_ms, 1), grad_to_none=[h, w]
            )
            results[name] = {"ms": ms, "peak": peak, "loss": loss.item()}
        except Exception as err:  # one failing variant (e.g. OOM) must not stop the others
            print(f"{name:<18}FAILED: {type(err).__name__}: {str(err).splitlines()[0][:150]}")
        finally:
            h = w = y = None
            torch.cuda.empty_cache()
    base = results.get("naive")
    for name, r in results.items():
        speed = f"{base['ms'] / r['ms']:.2f}x" if base else "-"
        memory = f"1/{base['peak'] / max(r['peak'], 1):.1f}" if base else "-"
        print(
            f"{name:<18}{r['ms']:>10.1f}{r['peak'] / 2**30:>10.2f}{r['loss']:>12.5f}{speed:>16}{memory:>17}"
        )
    if base and "afnext-triton" in results:
        r = results["afnext-triton"]
        print(f"target peak <= 1/8 naive: {'MET' if base['peak'] >= 8 * r['peak'] else 'NOT MET'}; "
              f"target speed >= 0.9x: {'MET' if base['ms'] / r['ms'] >= 0.9 else 'NOT MET'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--tokens", type=int)
    parser.add_argument("--vocab", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--rep-ms", type=int, default=300)
    parser.add_argument(
        "--child-timeout", type=float, default=900, help="CPU: seconds per variant's child process"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (same as BENCH_SMOKE=1)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device == "cuda"
    defaults = (45_000, 152_064, 3_584) if gpu else (4_096, 152_064, 512)
    if SMOKE:
        defaults = (256, 2_048, 64)
    args.tokens = args.tokens or defaults[0]
    args.vocab = args.vocab or defaults[1]
    args.hidden = args.hidden or defaults[2]
    if args.child:
        _child(args)
    elif gpu:
        _gpu(args)
    else:
        _cpu(args)


if __name__ == "__main__":
    main()
