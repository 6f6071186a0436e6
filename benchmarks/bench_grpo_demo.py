"""The CPU GRPO demo, measured: GRPO against SFT of the same wall time from the same early-stopped tiny model.

    .venv/bin/python benchmarks/bench_grpo_demo.py [--home DIR] [--start-steps 75] [--grpo-steps 600]
    .venv/bin/python benchmarks/bench_grpo_demo.py --think [--think-start-steps 500] [--think-grpo-steps 200]

Instruct (the default):

1. ``afnext train experiment=tiny trainer.max_steps=START`` (builds the demo's 2,400 scenes on first use): an SFT
   run stopped early, whose held-out accuracy should lie between 0.3 and 0.7;
2. ``afnext train experiment=tiny_grpo init_from=<1> trainer.max_steps=GRPO``: GRPO with the accuracy reward;
3. ``afnext train experiment=tiny init_from=<1> trainer.max_steps=M``: SFT for as long as 2 (``M`` from the SFT
   steps per second of run 1's stage);
4. the greedy held-out evaluation of ``make demo`` (``afnext.evaluation.qa.evaluate_manifest``, the 187 test
   questions, 12 new tokens) of the models of 1, 2 and 3.

``--think``: the same scenes with TACoT chains (``afnext data build ... mode=think``), a Think SFT start, then
``experiment=tiny_grpo_think`` (accuracy, format and grounding rewards); reported: accuracy, format validity and
the fraction of cited spans that overlap a true event (and their mean IoU) before and after.

Each command runs in its own process (``nice -n 10``, ``OMP_NUM_THREADS=2``, W&B offline); ``wall_s`` is the
command's, ``stage_s`` its stage's (from the W&B run's start to the ``DONE`` marker). A run already finished in
``<home>`` is reused with its recorded times (``<home>/logs/<run>.json``). Results go to
``<home>/bench_grpo_demo[_think].json`` and stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
AFNEXT = [sys.executable, "-m", "afnext.cli"]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "AFNEXT_HOME": str(home), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "2",
            "MKL_NUM_THREADS": "2"}  # fmt: skip


def run(cmd: list[str], home: Path, log: Path, nice: bool = True) -> dict[str, Any]:
    """Run an afnext command; its wall time, and the time of its (last) stage from its W&B run's start (the logger
    is made just before training) to its ``DONE`` marker (written once ``model/`` is saved)."""
    full = (["nice", "-n", "10"] if nice else []) + cmd
    print("$ AFNEXT_HOME=" + str(home), "afnext", " ".join(cmd[len(AFNEXT) :]), flush=True)
    record = log.with_suffix(".json")
    if record.is_file():
        print("  (finished earlier)", flush=True)
        return json.loads(record.read_text())
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(full, stdout=out, stderr=subprocess.STDOUT, env=_env(home), cwd=ROOT)
    wall = time.perf_counter() - start
    if code:
        raise SystemExit(f"command failed ({code}); see {log}")
    result: dict[str, Any] = {"wall_s": round(wall, 1)}
    name = next((a.split("=", 1)[1] for a in cmd if a.startswith("run_name=")), None)
    stages = sorted((home / "runs" / name / "stages").glob("*")) if name else []
    if stages:
        stage = stages[-1]
        opened = min(p.stat().st_mtime for p in (stage / "wandb").glob("offline-run-*"))
        result["stage_s"] = round((stage / "DONE").stat().st_mtime - opened, 1)
    record.write_text(json.dumps(result))
    return result


def model_of(run_dir: Path) -> Path:
    return Path(json.loads((run_dir / "final.json").read_text())["model"])


def evaluate(model_dir: Path, manifest: Path, max_new_tokens: int, think: bool) -> dict[str, Any]:
    """The demo's greedy evaluation, plus (think) format validity and span grounding of the answers."""
    from afnext.evaluation.chat import load_for_chat
    from afnext.evaluation.qa import evaluate_manifest

    model, processor = load_for_chat(model_dir)
    result = evaluate_manifest(
        model, manifest, processor=processor, batch_size=32, max_new_tokens=max_new_tokens
    )
    out: dict[str, Any] = {"accuracy": round(result.accuracy, 4), "chance": round(result.chance, 4),
                           "count": result.count}  # fmt: skip
    if think:
        out.update(grounding_scores(result.predictions, manifest))
    return out


def grounding_scores(predictions: list[dict[str, Any]], manifest: Path) -> dict[str, float]:
    """Format validity, cited spans per answer, the fraction of cited spans overlapping a true event, and their
    mean best IoU (events of kind sound / music / speech of each line's timeline)."""
    from afnext.reasoning.format import spans_in, validate_response

    lines = {
        json.loads(x)["id"]: json.loads(x) for x in manifest.read_text().splitlines() if x.strip()
    }
    valid = cited = overlapping = 0
    iou = 0.0
    for p in predictions:
        line = lines[p["id"]]
        events = [
            (e["onset"], e["offset"])
            for e in line["timeline"]
            if e["kind"] in ("sound", "music", "speech")
        ]
        valid += not validate_response(p["prediction"], duration=line["duration"])
        for span in spans_in(p["prediction"]):
            cited += 1
            inside = span.end <= line["duration"] + 0.01 and span.start <= span.end
            overlapping += inside and any(span.overlap(a, b) > 0 for a, b in events)
            iou += max((span.iou(a, b) for a, b in events), default=0.0) if inside else 0.0
    n = max(len(predictions), 1)
    return {
        "format_validity": round(valid / n, 4),
        "spans_per_answer": round(cited / n, 3),
        "span_overlap_fraction": round(overlapping / cited, 4) if cited else 0.0,
        "span_mean_iou": round(iou / cited, 4) if cited else 0.0,
    }


def instruct(args: argparse.Namespace) -> dict[str, Any]:
    home, logs = args.home, args.home / "logs"
    runs, test = home / "runs", home / "data" / "tiny_scenes" / "test.jsonl"
    results: dict[str, Any] = {}
    start = runs / "start"
    results["start_run"] = run(
        [*AFNEXT, "train", "experiment=tiny", f"trainer.max_steps={args.start_steps}", "run_name=start"],
        home, logs / "start.log",
    )  # fmt: skip
    results["start"] = evaluate(model_of(start), test, 12, think=False)
    print("start:", results["start"], flush=True)
    results["grpo_run"] = run(
        [*AFNEXT, "train", "experiment=tiny_grpo", f"init_from={start}", f"trainer.max_steps={args.grpo_steps}",
         "run_name=grpo"],
        home, logs / "grpo.log",
    )  # fmt: skip
    results["grpo"] = evaluate(model_of(runs / "grpo"), test, 12, think=False)
    print("grpo:", results["grpo"], results["grpo_run"], flush=True)
    # SFT steps per second of the start run's stage (training, validation, export) times the GRPO stage's time.
    rate = args.start_steps / results["start_run"]["stage_s"]
    sft_steps = args.sft_steps or max(1, round(rate * results["grpo_run"]["stage_s"]))
    results["sft_run"] = run(
        [*AFNEXT, "train", "experiment=tiny", f"init_from={start}", f"trainer.max_steps={sft_steps}",
         "run_name=sft_same_time"],
        home, logs / "sft.log",
    )  # fmt: skip
    results["sft_run"]["steps"] = sft_steps
    results["sft"] = evaluate(model_of(runs / "sft_same_time"), test, 12, think=False)
    print("sft:", results["sft"], results["sft_run"], flush=True)
    return results


def think(args: argparse.Namespace) -> dict[str, Any]:
    from afnext.config import compose_config

    home, logs = args.home, args.home / "logs"
    data = home / "data" / "tiny_scenes_think"
    runs, results = home / "runs", {}
    build = list(compose_config("train", ["experiment=tiny_grpo_think"]).demo.build)
    if not (data / "test.jsonl").is_file():
        results["data"] = run(
            [*AFNEXT, "data", "build", *build, f"out={data}"], home, logs / "think_data.log"
        )
    start = runs / "think_start"
    splits = [f"data.{s}=[{data / (s + '.jsonl')}]" for s in ("train", "val", "test")]
    results["start_run"] = run(
        [*AFNEXT, "train", "experiment=tiny", *splits, "optim.module.max_new_tokens=72",
         f"trainer.max_steps={args.think_start_steps}", "run_name=think_start"],
        home, logs / "think_start.log",
    )  # fmt: skip
    results["start"] = evaluate(model_of(start), data / "test.jsonl", 72, think=True)
    print("think start:", results["start"], flush=True)
    results["grpo_run"] = run(
        [*AFNEXT, "train", "experiment=tiny_grpo_think", f"init_from={start}",
         f"trainer.max_steps={args.think_grpo_steps}", "run_name=think_grpo"],
        home, logs / "think_grpo.log",
    )  # fmt: skip
    results["grpo"] = evaluate(model_of(runs / "think_grpo"), data / "test.jsonl", 72, think=True)
    print("think grpo:", results["grpo"], results["grpo_run"], flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--home", type=Path, default=Path("/tmp/afnext_grpo_demo"), help="AFNEXT_HOME"
    )
    parser.add_argument("--start-steps", type=int, default=75)
    parser.add_argument("--grpo-steps", type=int, default=600)
    parser.add_argument(
        "--sft-steps", type=int, default=None, help="SFT steps of run 3 (default: as long as GRPO)"
    )
    parser.add_argument("--think", action="store_true", help="the Think-mode variant instead")
    parser.add_argument("--think-start-steps", type=int, default=500)
    parser.add_argument("--think-grpo-steps", type=int, default=200)
    args = parser.parse_args()
    args.home = args.home.resolve()
    (args.home / "logs").mkdir(parents=True, exist_ok=True)
    results = think(args) if args.think else instruct(args)
    out = args.home / ("bench_grpo_demo_think.json" if args.think else "bench_grpo_demo.json")
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
