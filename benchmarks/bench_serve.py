"""Server throughput: ``afnext serve`` answering with 1, 4 and 16 concurrent clients against one client at a
time (sequential).

The server (the same app ``afnext serve`` runs, on 127.0.0.1 in this process's background thread, dynamic
batching up to ``--max-batch`` requests with a 10 ms window) answers ``--requests`` chat completions, each with
a 4-8 s wav clip as ``input_audio``, sent by the official ``openai`` client from 1, 4 and 16 threads. Prints
requests per second, median latency and the ratio to sequential, and checks that the answers at every
concurrency equal the sequential ones (greedy). Run from the repository root::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_serve.py --checkpoint .afnext/runs/<run>
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import soundfile


def clip(i: int) -> str:
    rng = np.random.default_rng(i)
    seconds = float(rng.uniform(4.0, 8.0))
    t = np.arange(int(16000 * seconds)) / 16000
    wave = 0.2 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + 0.02 * rng.standard_normal(
        t.shape
    )
    buffer = io.BytesIO()
    soundfile.write(buffer, wave.astype(np.float32), 16000, format="WAV")
    return base64.b64encode(buffer.getvalue()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="run / model folder (the demo's)")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument(
        "--min-new-tokens",
        type=int,
        default=0,
        help="answers of at least this many tokens (min_tokens)",
    )
    args = parser.parse_args()
    import openai
    import torch

    from afnext.serving.server import ServerThread, build_app

    app = build_app(
        args.checkpoint,
        model_name="m",
        generation={"max_new_tokens": args.max_new_tokens, "repetition_penalty": 1.0},
        max_batch_size=args.max_batch,
        device="cpu",
    )
    bodies = [
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": clip(i), "format": "wav"}},
                    {"type": "text", "text": "Which sound is heard in the clip?"},
                ],
            }
        ]
        for i in range(args.requests)
    ]
    with ServerThread(app) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=600)

        def ask(messages: list) -> tuple[str, float]:
            start = time.perf_counter()
            reply = client.chat.completions.create(
                model="m", messages=messages, extra_body={"min_tokens": args.min_new_tokens}
            )
            return reply.choices[0].message.content, time.perf_counter() - start

        ask(bodies[0])  # warm-up
        rows = {}
        for clients in (1, 4, 16):
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                answers = list(pool.map(ask, bodies))
            rows[clients] = (time.perf_counter() - start, answers)
    print(f"afnext serve throughput: {args.requests} requests with 4-8 s wav clips, greedy, "
          f"min/max_new_tokens={args.min_new_tokens}/{args.max_new_tokens}, max_batch_size={args.max_batch}, CPU, "
          f"{torch.get_num_threads()} thread(s)")  # fmt: skip
    print(
        f"{'clients':>8}{'seconds':>10}{'req/s':>9}{'p50 latency s':>15}{'vs sequential':>15}{'same answers':>14}"
    )
    sequential = rows[1][0]
    for clients, (seconds, answers) in rows.items():
        p50 = statistics.median(latency for _, latency in answers)
        same = [a for a, _ in answers] == [a for a, _ in rows[1][1]]
        print(f"{clients:>8}{seconds:>10.1f}{args.requests / seconds:>9.2f}{p50:>15.3f}"
              f"{sequential / seconds:>14.2f}x{'yes' if same else 'NO':>14}")  # fmt: skip


if __name__ == "__main__":
    main()
