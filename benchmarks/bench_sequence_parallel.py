"""Sequence parallelism: one long packed row's training step split over N processes against one process.

A model of AF-Next's shape at reduced width (the tiny experiment's encoder and connector; a Qwen2 LLM of
``--hidden`` channels, ``--layers`` layers, 8 query / 2 key-value heads, afnext_varlen attention) takes one row of
``--tokens`` text tokens in ``--documents`` documents with labels (forward, fused loss, backward). The plain run is
one process; then the same row under Ulysses (``--ulysses``) and Ring (``--ring``) over N gloo (CPU) or NCCL (GPU)
processes, each holding the same weights. Prints, side by side: the loss and gradient norm (they must agree),
seconds per step, tokens per second per rank, the bytes each rank keeps for the backward pass (activations,
counted through autograd's saved-tensor hooks) and, on a GPU, each rank's peak memory.

    python benchmarks/bench_sequence_parallel.py                      # CPU: 2 processes, 8,192 tokens
    python benchmarks/bench_sequence_parallel.py --tokens 16384 --nproc 2
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build(args: argparse.Namespace, device: torch.device):  # type: ignore[no-untyped-def]
    from hydra.utils import instantiate

    from afnext.config import compose_config

    cfg = compose_config(
        "train",
        [
            "experiment=tiny",
            f"llm.config.hidden_size={args.hidden}",
            f"llm.config.intermediate_size={args.hidden * 4}",
            f"llm.config.num_hidden_layers={args.layers}",
            "llm.config.num_attention_heads=8",
            "llm.config.num_key_value_heads=2",
            f"llm.config.max_position_embeddings={args.tokens * 2}",
            "llm.attn_implementation=afnext_varlen",
        ],
    )
    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="object").to(device)
    model.train()
    return model


def batch(args: argparse.Namespace, vocab: int, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(10, vocab, (1, args.tokens), generator=gen)
    size = args.tokens // args.documents
    positions = torch.arange(args.tokens) % size
    labels = ids.clone()
    labels[0, positions < size // 2] = -100  # the first half of each document is the prompt
    return {
        "input_ids": ids.to(device),
        "position_ids": positions[None].to(device),
        "labels": labels.to(device),
    }


class SavedBytes:
    """The bytes autograd keeps for the backward pass (each storage once): the activation memory, which
    sequence parallelism divides, measured exactly on any device."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def hooks(self):  # type: ignore[no-untyped-def]
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)

    @property
    def gib(self) -> float:
        return sum(self.storages.values()) / 2**30


def run(rank: int, world: int, mode: str, args: argparse.Namespace, port: int, queue) -> None:  # type: ignore[no-untyped-def]
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    model = build(args, device)
    if world > 1:
        from afnext.llms.sequence_parallel import SequenceGroup

        everyone = dist.group.WORLD
        ring = mode == "ring"
        model.sequence_group = SequenceGroup(
            ulysses=None if ring else everyone, ulysses_size=1 if ring else world,
            ulysses_rank=0 if ring else rank, ring=everyone if ring else None,
            ring_size=world if ring else 1, ring_rank=rank if ring else 0, group=everyone,
        )  # fmt: skip
        model.llm.use_sequence_parallel_attention()
    inputs = batch(args, int(model.llm.config.vocab_size), device)
    times, loss, norm, peak, activations = [], 0.0, 0.0, 0.0, 0.0
    for step in range(args.warmup + args.steps):
        model.zero_grad(set_to_none=True)
        saved = SavedBytes()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with saved.hooks():
            out = model(**inputs)
        out.loss.backward()
        if cuda:
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if (
            world > 1
        ):  # each rank's loss is its share of the row's summed losses over the row's targets
            for grad in grads:
                dist.all_reduce(grad)
            loss_t = out.loss.detach().clone()
            dist.all_reduce(loss_t)
            loss = float(loss_t)
        else:
            loss = float(out.loss.detach())
        norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        if step >= args.warmup:
            times.append(elapsed)
            activations = saved.gib
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    if rank == 0:
        queue.put({"mode": mode, "world": world, "seconds": sorted(times)[len(times) // 2], "loss": loss,
                   "grad_norm": norm, "peak_gib": peak,
                   "saved_gib": activations})  # fmt: skip
    if world > 1:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--documents", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--modes", default="plain,ulysses,ring")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    results = []
    for mode in args.modes.split(","):
        world = 1 if mode == "plain" else args.nproc
        queue = ctx.Queue()
        port = _free_port()
        procs = [
            ctx.Process(target=run, args=(r, world, mode, args, port, queue)) for r in range(world)
        ]
        for proc in procs:
            proc.start()
        result = None
        while result is None:
            try:
                result = queue.get(timeout=5)
            except Exception:  # queue.Empty: stop waiting once a process has failed
                if any(p.exitcode for p in procs):
                    for proc in procs:
                        proc.kill()
                    sys.exit(f"{mode}: a process exited with an error (its traceback is above)")
        for proc in procs:
            proc.join()
            if proc.exitcode:
                sys.exit(f"{mode}: a process exited with {proc.exitcode}")
        results.append(result)

    base = results[0]
    print(f"{args.tokens} tokens in {args.documents} documents, hidden {args.hidden}, {args.layers} layers, "
          f"{args.threads} thread(s) per process")  # fmt: skip
    header = f"{'mode':<10}{'ranks':>6}{'loss':>12}{'grad norm':>12}{'s/step':>9}{'tok/s/rank':>12}"
    print(header + f"{'saved GiB/rank':>16}{'peak GiB/rank':>15}{'speed-up':>10}{'saved':>8}")
    for r in results:
        per_rank = args.tokens / r["world"] / r["seconds"]
        peak = "-" if math.isnan(r["peak_gib"]) else f"{r['peak_gib']:.2f}"
        print(
            f"{r['mode']:<10}{r['world']:>6}{r['loss']:>12.6f}{r['grad_norm']:>12.6f}{r['seconds']:>9.2f}"
            f"{per_rank:>12.0f}{r['saved_gib']:>16.3f}{peak:>15}"
            f"{base['seconds'] / r['seconds']:>9.2f}x{r['saved_gib'] / max(base['saved_gib'], 1e-12):>7.2f}x"
        )


if __name__ == "__main__":
    main()
