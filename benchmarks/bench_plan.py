"""``afnext plan`` against measurement: the planned memory of a training step and the measured peak, side by side.

Each configuration runs in a fresh child process on the CPU: compose the config, build the model, one batch as
the plan assumes it (``data.batch_size`` samples of the stage's longest audio with a prompt and an answer, or one
packed row of ``data.max_length`` tokens), then two steps of forward, backward and AdamW. The measured figure is the
peak of the bytes held by tensors made from the model's construction on (a dispatch mode counts every storage while
it lives: deterministic, the CPU's counterpart of ``torch.cuda.max_memory_allocated``); the planned one is
``afnext plan``'s total for the stage (CPU: the PyTorch reference attention, no GPU overhead).

    python benchmarks/bench_plan.py            # three configurations: plain, checkpointing, packed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WIDE = [  # a tiny model made wide enough for its activations to dominate the process's own memory
    "experiment=tiny",
    "encoder=af_whisper_tiny",
    "connector=mlp",
    "data=manifest",
    "data.train=[unused.jsonl]",
    "data.val=[unused.jsonl]",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "llm.config.hidden_size=384",
    "llm.config.intermediate_size=1024",
    "llm.config.num_hidden_layers=4",
    "llm.config.num_attention_heads=6",
    "llm.config.num_key_value_heads=2",
]
CONFIGS = {
    "plain": [*WIDE, "data.batch_size=2", "data.max_audio_seconds=60"],
    "checkpointing": [
        *WIDE, "data.batch_size=2", "data.max_audio_seconds=60", "optim.module.activation_checkpointing=true",
    ],
    # three 40-second samples (3,249 tokens) fill a row of 3,300 (the plan assumes full rows)
    "packed": [
        *WIDE, "data.batch_size=3", "data.max_audio_seconds=40", "data.pack=true", "data.max_length=3300",
        "llm.attn_implementation=afnext_varlen",
    ],
}  # fmt: skip


def LiveBytes():
    """A dispatch mode that counts the bytes of every tensor storage made under it while it lives, with the
    peak: the memory a step holds, exactly (the resident set also holds the allocator's cache and varies from
    run to run by 20%)."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class _LiveBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live: dict[int, int] = {}
            self.current = self.peak = 0

        def _free(self, key: int) -> None:
            self.current -= self.live.pop(key, 0)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                    storage = t.untyped_storage()
                    key = storage._cdata
                    if key not in self.live:
                        self.live[key] = storage.nbytes()
                        self.current += self.live[key]
                        self.peak = max(self.peak, self.current)
                        weakref.finalize(storage, self._free, key)
            return out

    return _LiveBytes()


def measure(overrides: list[str]) -> dict[str, float]:
    """Planned and measured bytes of one training step of a configuration (run in this process)."""
    import torch
    from hydra.utils import instantiate

    from afnext.config import compose_config
    from afnext.data.collate import Collator
    from afnext.data.processor import AudioProcessor
    from afnext.training.plan import plan_run
    from afnext.training.precision import use_master_weights
    from afnext.training.run import _stages

    torch.manual_seed(0)
    cfg = compose_config("train", overrides)
    (plan,) = plan_run(cfg, 2**40, search=False)
    stage = _stages(cfg)[0]
    seconds = float(stage.max_audio_seconds)
    with torch.device("meta"):  # the processor only needs the sizes
        probe = instantiate(cfg.model, _convert_="all")
    processor = AudioProcessor.from_model(probe, padding_side="right", max_seconds=None)
    wave = 0.1 * torch.randn(int(seconds * processor.sampling_rate))
    answer = "the melody starts after the chirp and ends before the last low tone " * 3
    conv = [
        {"role": "user", "content": "<sound>Describe it."},
        {"role": "assistant", "content": answer},
    ]
    samples = []
    for i in range(int(cfg.data.batch_size)):
        s = processor.encode(conv, [wave])
        s.update(
            id=str(i),
            where=f"x:{i}",
            input_ids=torch.tensor(s["input_ids"]),
            labels=torch.tensor(s["labels"]),
        )
        samples.append(s)
    pack = bool(cfg.data.get("pack"))
    batch = Collator(
        processor.pad_token_id, pack=pack, max_length=stage.max_length if pack else None
    )(samples)
    keys = (
        "input_ids",
        "attention_mask",
        "position_ids",
        "labels",
        "input_features",
        "input_features_mask",
    )
    inputs = {k: batch[k] for k in keys if batch.get(k) is not None}
    del probe
    tracker = LiveBytes()
    with tracker:
        model = instantiate(cfg.model, _convert_="all")
        model.set_trainable(stage.trainable)
        use_master_weights(model, cfg.trainer.precision)
        if cfg.optim.module.activation_checkpointing:
            for part in (model.encoder, model.llm):
                part.enable_activation_checkpointing()
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model(**inputs).loss.backward()  # the second step: the optimizer state exists now
        optimizer.step()
    peak = tracker.peak
    return {
        "planned": float(plan.total_bytes),
        "measured": float(peak),
        "tokens": int(batch["input_ids"].numel()),
        "planned_tokens": int(plan.tokens_per_gpu),
        "terms": {k: round(v / 2**20) for k, v in plan.terms.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.config:
        print(json.dumps(measure(CONFIGS[args.config])))
        return
    print(
        f"{'config':>14} {'tokens':>7} {'planned MiB':>12} {'measured MiB':>13} {'planned / measured':>19}"
    )
    for name in CONFIGS:
        run = subprocess.run(
            [sys.executable, __file__, "--config", name],
            capture_output=True,
            text=True,
            env=os.environ,
        )
        if run.returncode:
            print(f"{name:>14} failed: {run.stderr[-1500:]}")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(
            f"{name:>14} {r['tokens']:>7} {r['planned'] / 2**20:>12.0f} {r['measured'] / 2**20:>13.0f} "
            f"{r['planned'] / r['measured']:>19.2f}   plan (MiB, {r['planned_tokens']} tokens): {r['terms']}"
        )


if __name__ == "__main__":
    main()
