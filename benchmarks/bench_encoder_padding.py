"""AF-Whisper on clips shorter than its 30 s window: the frames no valid token depends on skipped, against
transformers' forward over the padded window (what the official AF3 code and ``AudioFlamingo3Encoder`` run).

A batch of ``--batch`` clips of one length in 30 s windows (128-bin log-mel), through ``AFWhisperEncoder.forward``
(cuts each batch to its longest clip's frames + 2, the conv stem's reach) and through its ``tower`` (the full
3,000 frames); forward only, under ``torch.inference_mode``, like evaluation. Prints time per batch, the ratio,
and the largest difference of the valid tokens. Widths of Whisper-base by default (``--width``, ``--layers``,
``--heads`` for others; large-v3 is 1280 / 32 / 20). Run from the repository root::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_encoder_padding.py
"""

from __future__ import annotations

import argparse
import time

import torch


def best_seconds(fn, repeats: int, *args, **kwargs) -> float:
    fn(*args, **kwargs)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 10.0, 20.0, 30.0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from afnext.encoders.whisper import AFWhisperEncoder

    torch.manual_seed(0)
    encoder = AFWhisperEncoder(
        d_model=args.width, num_layers=args.layers, num_heads=args.heads, ffn_dim=4 * args.width
    ).eval()
    print(
        f"AF-Whisper d_model={args.width} layers={args.layers} heads={args.heads}, batch {args.batch}, "
        f"CPU {torch.get_num_threads()} thread(s), float32, forward"
    )
    print(f"{'clip':>8}{'padded (transformers)':>24}{'afnext':>10}{'ratio':>8}{'max diff':>11}")
    for seconds in args.seconds:
        frames = round(seconds * 100)
        features = torch.randn(args.batch, 128, 3000)
        mask = torch.zeros(args.batch, 3000, dtype=torch.long)
        mask[:, :frames] = 1
        with torch.inference_mode():
            full = best_seconds(encoder.tower, args.repeats, features, input_features_mask=mask)
            ours = best_seconds(encoder, args.repeats, features, mask)
            got, valid = encoder(features, mask)
            want = encoder.tower(features, input_features_mask=mask).last_hidden_state
            diff = float((got[valid] - want[:, : got.shape[1]][valid]).abs().max())
        print(
            f"{seconds:>7.0f}s{full * 1e3:>21.0f} ms{ours * 1e3:>7.0f} ms{full / ours:>7.2f}x{diff:>11.1e}"
        )


if __name__ == "__main__":
    main()
