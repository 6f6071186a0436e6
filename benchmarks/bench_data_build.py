"""Time the TACoT data engine: the 200-scene `afnext data build` and one 30-minute synthetic scene.

Budgets (the issue's): the build under 120 s and the 30-minute scene (timeline + audio) under 30 s on 2
CPU cores. Run from the repository root::

    .venv/bin/python benchmarks/bench_data_build.py            # both, checked against the budgets
    .venv/bin/python benchmarks/bench_data_build.py --scenes 50 --no-check

Wall time depends on what else runs on the machine, so the script also prints the CPU seconds used,
the load average, and a calibration time (a fixed numpy + Python workload, about 0.3 s on an idle core)
to compare runs across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BUILD_BUDGET_S = 120.0
SCENE_BUDGET_S = 30.0


def calibration_seconds() -> float:
    """A fixed workload: 20 FFTs of 2**16 samples and a 2-million-step Python loop."""
    started = time.perf_counter()
    x = np.random.default_rng(0).standard_normal(1 << 16)
    for _ in range(20):
        np.fft.irfft(np.fft.rfft(x))
    total = 0
    for i in range(2_000_000):
        total += i
    return time.perf_counter() - started


def bench_build(scenes: int, out: Path) -> dict[str, float]:
    afnext = str(Path(sys.executable).with_name("afnext"))
    cmd = [
        afnext,
        "data",
        "build",
        "generator=template",
        "source=synthetic",
        f"source.num_scenes={scenes}",
        f"out={out}",
        "seed=3",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"build failed:\n{proc.stderr}")
    report = json.loads(proc.stdout)
    return {
        "command": " ".join(cmd),
        "wall_s": round(wall, 2),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "samples": sum(report["samples"].values()),
        "audio_files": sum(report["audio"].values()),
    }


def bench_long_scene(minutes: float, out: Path) -> dict[str, float]:
    import soundfile as sf

    from afnext.reasoning.scenes import EVENT_TYPES, SceneSynthesizer, espeak_available

    seconds = minutes * 60
    synth = SceneSynthesizer(
        min_duration=seconds,
        max_duration=seconds,
        min_events=int(10 * minutes),
        max_events=int(10 * minutes),
        event_types=tuple(EVENT_TYPES),
        speech=espeak_available(),
        overlap_prob=0.2,
    )
    cpu0, started = time.process_time(), time.perf_counter()
    scene = synth.plan(0)
    planned = time.perf_counter()
    audio = scene.render()
    rendered = time.perf_counter()
    sf.write(out / "long.flac", audio, 16_000, subtype="PCM_16")
    (out / "long.json").write_text(json.dumps(scene.timeline.to_list()))
    written = time.perf_counter()
    return {
        "minutes": minutes,
        "events": len(scene.timeline.events),
        "speech": synth.speech,
        "plan_s": round(planned - started, 2),
        "render_s": round(rendered - planned, 2),
        "generate_s": round(rendered - started, 2),
        "write_flac_s": round(written - rendered, 2),
        "cpu_s": round(time.process_time() - cpu0, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--long-minutes", type=float, default=30.0)
    parser.add_argument(
        "--no-check", action="store_true", help="report only; do not fail over budget"
    )
    args = parser.parse_args()
    print(
        f"cores: {os.cpu_count()}, load average: {os.getloadavg()}, "
        f"calibration: {calibration_seconds():.2f} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        build = bench_build(args.scenes, Path(tmp) / "ds")
        print("data build:", json.dumps(build))
        scene = bench_long_scene(args.long_minutes, Path(tmp))
        print("long scene:", json.dumps(scene))
    print(f"load average after: {os.getloadavg()}")
    over = []
    if args.scenes == 200 and build["wall_s"] > BUILD_BUDGET_S:
        over.append(f"200-scene build took {build['wall_s']} s > {BUILD_BUDGET_S} s")
    if args.long_minutes == 30 and scene["generate_s"] > SCENE_BUDGET_S:
        over.append(f"30-minute scene took {scene['generate_s']} s > {SCENE_BUDGET_S} s")
    for line in over:
        print("OVER BUDGET:", line)
    return 1 if over and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
