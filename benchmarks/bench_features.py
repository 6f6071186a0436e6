"""Time afnext's batched Whisper log-mel against transformers' WhisperFeatureExtractor.

Both compute the features of 30 min of 16 kHz audio as the AF3 processor does (30 s chunks, each
padded to 30 s, 128 mel bins). The reference is timed on the path the AF3 processor uses, which is
the extractor's torch path whenever torch is installed (``_torch_extract_fbank_features``), and,
for completeness, on its numpy fallback (``_np_extract_fbank_features``, used without torch).
Every result is checked against ours (max abs diff) before its time is reported.

Run from the repository root::

    .venv/bin/python benchmarks/bench_features.py              # 30 min, 2 threads, 3 repeats
    .venv/bin/python benchmarks/bench_features.py --no-numpy   # skip the slow numpy fallback

The output is a Markdown block meant to be pasted into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from afnext.audio import whisper_features

SR = 16000
CHUNK = 30 * SR


def make_audio(seconds: float, seed: int = 0) -> np.ndarray:
    """Deterministic test audio: a harmonic tone with tremolo, a slow chirp and some noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * k * 220.0 * t) / k for k in range(1, 6))
    tone *= 0.6 + 0.4 * np.sin(2 * np.pi * 0.3 * t)
    sweep = np.sin(2 * np.pi * (300.0 + 100.0 * np.sin(2 * np.pi * 0.01 * t)) * t)
    wave = 0.15 * tone + 0.1 * sweep + 0.02 * rng.standard_normal(t.shape[0])
    return wave.astype(np.float32)


def timed(fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    """Run ``fn`` ``repeats`` times; return the wall times and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=1800.0, help="audio length (1800 = 30 min)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per path (after warm-up)"
    )
    parser.add_argument("--no-numpy", action="store_true", help="skip the numpy fallback path")
    args = parser.parse_args(argv)

    from transformers import WhisperFeatureExtractor
    from transformers import __version__ as transformers_version

    torch.set_num_threads(args.threads)
    wave = make_audio(args.seconds)
    # The AF3 processor's chunking (processing_audioflamingo3.py, _process_audio): 30 s slices.
    chunks = [wave[i : i + CHUNK] for i in range(0, wave.shape[0], CHUNK)]
    extractor = WhisperFeatureExtractor(feature_size=128)
    wave_t = torch.from_numpy(wave)

    def ours() -> np.ndarray:
        return whisper_features(wave_t, max_seconds=None)[0]

    def hf_torch() -> np.ndarray:
        out = extractor(chunks, sampling_rate=SR, return_attention_mask=True, return_tensors="pt")
        return out["input_features"]

    def hf_numpy() -> np.ndarray:
        # The extractor's own padding step, then its numpy STFT (the no-torch fallback).
        padded = extractor.pad(
            {"input_features": [c[:, None] for c in chunks]},
            padding="max_length",
            max_length=CHUNK,
            return_attention_mask=True,
        )
        batch = padded["input_features"][..., 0]  # (W, 480000)
        return torch.from_numpy(extractor._np_extract_fbank_features(batch, "cpu"))

    paths: list[tuple[str, Callable[[], object], int]] = [
        ("afnext whisper_features (torch, batched)", ours, args.repeats),
        ("WhisperFeatureExtractor, torch path (AF3 processor default)", hf_torch, args.repeats),
    ]
    if not args.no_numpy:
        # One run: it is slow and its time does not vary much.
        paths.append(("WhisperFeatureExtractor, numpy path (no-torch fallback)", hf_numpy, 1))

    # Warm-up (caches, lazy imports, allocator), then the timed runs in rounds, one run of each path per
    # round: a noisy or drifting machine slows both sides alike instead of whichever ran in its slow phase.
    outputs = [fn() for _, fn, _ in paths]
    times: list[list[float]] = [[] for _ in paths]
    for round_ in range(max(repeats for _, _, repeats in paths)):
        for (_, fn, repeats), path_times in zip(paths, times, strict=True):
            if round_ < repeats:
                path_times += timed(fn, 1)[0]
    reference = outputs[0]
    results = []
    for (name, _, _), path_times, features in zip(paths, times, outputs, strict=True):
        diff = float((torch.as_tensor(features) - reference).abs().max())
        results.append(
            (name, min(path_times), statistics.median(path_times), len(path_times), diff)
        )

    ours_best = results[0][1]
    windows = len(chunks)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    print(
        f"### Whisper log-mel features: {args.seconds:g} s of 16 kHz audio -> "
        f"({windows}, 128, 3000)\n"
    )
    print(f"Command: `{command}`  ")
    print(
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"transformers {transformers_version}, torch threads {torch.get_num_threads()}, "
        f"{args.repeats} timed runs after one warm-up, in rounds of one run per path (numpy path: 1)\n"
    )
    ours_median = results[0][2]
    print(
        "| path | best s | median s | runs | x real time | ours is x faster (best) | (median) "
        "| max abs diff |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, best, median, runs, diff in results:
        print(
            f"| {name} | {best:.3f} | {median:.3f} | {runs} | {args.seconds / best:,.0f} | "
            f"{best / ours_best:.1f} | {median / ours_median:.1f} | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
