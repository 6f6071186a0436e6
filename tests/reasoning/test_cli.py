"""`afnext data build`: the contract command through the console script (a subprocess, as outside scripts
run it), a third-party plugin (a subprocess: plugin discovery is cached per process), and the rest
in-process through ``afnext.cli.main`` (a Python start costs seconds on a busy 2-core machine)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

AFNEXT = str(Path(sys.executable).with_name("afnext"))


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [AFNEXT, *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def _main(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``afnext ARGS`` in this process: (exit code, stdout, stderr)."""
    from afnext.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _contract_command(out: Path, scenes: int) -> list[str]:
    """The contract command, exactly as outside scripts write it."""
    return [
        "data",
        "build",
        "generator=template",
        "source=synthetic",
        f"source.num_scenes={scenes}",
        f"out={out}",
        "seed=3",
    ]


def _jsonl_bytes(out: Path) -> dict[str, bytes]:
    return {split: (out / f"{split}.jsonl").read_bytes() for split in ("train", "val", "test")}


def test_contract_command_small(
    tmp_path: Path, check_manifest: Callable, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "ds"
    proc = _run(*_contract_command(out, 6))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["merged"] and report["audio"] == {"train": 4, "val": 1, "test": 1}
    lines = check_manifest(out)
    assert {split: len(ls) for split, ls in lines.items()} == report["samples"]
    assert all(ls for ls in lines.values())
    assert len(list((out / "audio").iterdir())) == 6
    # the summary counts each question type per split; the preview shows samples
    summary = json.loads((out / "summary.json").read_text())
    for split, ls in lines.items():
        counted = {}
        for line in ls:
            counted[line["question_type"]] = counted.get(line["question_type"], 0) + 1
        assert summary["question_types"][split] == counted
    preview = (out / "preview.md").read_text()
    shown = set(re.findall(r"^## (\w+) \(", preview, re.MULTILINE))
    assert shown == {line["question_type"] for ls in lines.values() for line in ls}
    # deterministic: the same command into another folder writes the same bytes
    again = tmp_path / "again"
    assert _main(capsys, *_contract_command(again, 6))[0] == 0
    assert _jsonl_bytes(again) == _jsonl_bytes(out)
    # resumable: rerun into the same folder finds the finished shard and changes nothing
    before = _jsonl_bytes(out)
    code, stdout, stderr = _main(capsys, *_contract_command(out, 6))
    assert code == 0, stderr
    assert json.loads(stdout)["shards_resumed"] == [0]
    assert _jsonl_bytes(out) == before


def test_easy_demo_task_overrides(
    tmp_path: Path, check_manifest: Callable, capsys: pytest.CaptureFixture
) -> None:
    """The knobs a small training demo turns: scene length, question types, multiple choice vs open,
    think vs instruct, questions per scene."""
    out = tmp_path / "demo"
    code, _, stderr = _main(
        capsys,
        "data",
        "build",
        "source.num_scenes=10",
        f"out={out}",
        "seed=1",
        "mode=instruct",
        "source.min_duration=4",
        "source.max_duration=6",
        "source.min_events=3",
        "source.max_events=3",
        "source.speech=off",
        "source.event_types=[low_tone,high_tone,noise_burst]",
        "generator.question_types=[order]",
        "generator.choices=2",
        "generator.samples_per_timeline=3",
        "generator.questions_per_type=3",
        "generator.paraphrase=false",
    )
    assert code == 0, stderr
    lines = [line for ls in check_manifest(out, "instruct").values() for line in ls]
    assert {line["question_type"] for line in lines} == {"order"}
    assert all(len(line["choices"]) == 2 for line in lines)
    assert all(
        re.fullmatch(r"\([AB]\) (low|high) tone|\([AB]\) noise burst", line["answer"])
        for line in lines
    )
    assert all(4 <= line["duration"] <= 6 for line in lines)
    labels = {e["label"] for line in lines for e in line["timeline"]}
    assert labels <= {"low tone", "high tone", "noise burst"}
    per_audio = {}
    for line in lines:
        per_audio[line["audio_id"]] = per_audio.get(line["audio_id"], 0) + 1
    assert max(per_audio.values()) <= 3 and sum(per_audio.values()) > len(per_audio)
    code, _, stderr = _main(
        capsys,
        "data",
        "build",
        f"out={tmp_path / 'open'}",
        "source.num_scenes=3",
        "source.speech=off",
        "generator.choices=0",
        "generator.question_types=[count]",
    )
    assert code == 0, stderr
    count_lines = [line for ls in check_manifest(tmp_path / "open").values() for line in ls]
    assert all(line["choices"] == [] and line["answer"].isdigit() for line in count_lines)


def test_print_config_and_bad_overrides(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, stdout, stderr = _main(
        capsys, "data", "build", f"out={tmp_path}", "generator.choices=2", "--cfg"
    )
    assert code == 0, stderr
    assert "_target_: afnext.reasoning.generators.template.TemplateGenerator" in stdout
    assert "choices: 2" in stdout and "questions_per_type: 1" in stdout
    code, _, stderr = _main(capsys, "data", "build", f"out={tmp_path / 'y'}", "generator=nope")
    assert code == 1 and "nope" in stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("generator.choices=1", "generator.choices must be 0 (open) or 2..10"),
        ("source.max_duration=1", "source.min_duration <= source.max_duration"),
        ("mode=chat", "mode must be one of"),
    ],
)
def test_bad_values_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, override: str, message: str
) -> None:
    """A bad value is reported as ``afnext data: error: ...`` naming the key, not a Hydra traceback
    (Hydra wraps what a ``_target_`` raises in InstantiationException; the CLI unwraps it)."""
    code, _, stderr = _main(capsys, "data", "build", f"out={tmp_path}", override)
    assert code == 1
    assert stderr.startswith("afnext data: error: ") and message in stderr


PLUGIN_INIT = '''
"""A third-party generator: one echo question per file."""
import random
from afnext.reasoning.format import Step, TACoTResponse
from afnext.reasoning.generators.base import QASample
from afnext.reasoning.generators.template import cite


class EchoGenerator:
    def __init__(self, greeting: str) -> None:
        self.greeting, self.count = greeting, 0

    def generate(self, timeline, rng: random.Random):
        first = timeline.events[0]
        self.count += 1
        step = Step(f"The {first.label} is at {cite(first, timeline.duration)}.")
        return [QASample("echo", f"{self.greeting} What is first?", TACoTResponse((step,), first.label))]

    def report(self):
        return {"echo": {"files": self.count}}
'''


def test_third_party_generator_plugin(tmp_path: Path, check_manifest: Callable) -> None:
    # A package plus a .dist-info declaring the afnext.plugins entry point, found through PYTHONPATH
    # by importlib.metadata: the same as an installed package, without touching the shared venv.
    site = tmp_path / "site"
    package = site / "echo_tacot"
    (package / "conf" / "reasoning" / "generator").mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN_INIT)
    (package / "conf" / "reasoning" / "generator" / "echo.yaml").write_text(
        "_target_: echo_tacot.EchoGenerator\ngreeting: Hello.\n"
    )
    dist = site / "echo_tacot-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-tacot\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[afnext.plugins]\necho_tacot = echo_tacot\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    out = tmp_path / "ds"
    proc = _run(
        "data",
        "build",
        "generator=echo",
        "source.num_scenes=5",
        "source.speech=off",
        f"out={out}",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for ls in check_manifest(out).values() for line in ls]
    assert len(lines) == 5
    assert {line["question_type"] for line in lines} == {"echo"}
    assert {line["generator"] for line in lines} == {"EchoGenerator"}
    assert lines[0]["conversations"][0]["value"].startswith("<sound>\nHello. What is first?")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generator"] == {"echo": {"files": 5}}


@pytest.mark.slow
def test_contract_command_200_scenes(tmp_path: Path, check_manifest: Callable) -> None:
    """The contract command at full size (its time is measured by benchmarks/bench_data_build.py)."""
    out = tmp_path / "ds"
    proc = _run(*_contract_command(out, 200))
    assert proc.returncode == 0, proc.stderr
    lines = check_manifest(out)
    assert len({line["sound"] for ls in lines.values() for line in ls}) == 200
    assert json.loads(proc.stdout)["audio"] == {"train": 160, "val": 20, "test": 20}
