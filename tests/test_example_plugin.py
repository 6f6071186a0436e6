"""The plugin guide's example package (examples/afnext-example-plugin, docs/plugins.md), installed as a user would:
an encoder with its own features, a connector and a data generator, found through the ``afnext.plugins`` entry
point. It trains a few steps, saves, reloads with ``from_pretrained``, generates and chats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "afnext-example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """The example installed into a folder of its own (not this environment), and an environment using it."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    home = tmp_path_factory.mktemp("home")
    return {
        **os.environ,
        "PYTHONPATH": str(target),
        "AFNEXT_HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
    }


def _afnext(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "afnext.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def _model_folder(env: dict[str, str], run_glob: str) -> str:
    (final,) = Path(env["AFNEXT_HOME"], "runs").glob(f"{run_glob}/final.json")
    return json.loads(final.read_text())["model"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_plugin_encoder_trains_saves_reloads_and_chats(installed):
    """The contract: ``afnext train experiment=tiny encoder=NAME trainer.max_steps=3`` on a fresh checkout
    (its data built on first use) trains, saves, exits 0 and prints the encoder's class name."""
    run = _afnext(
        installed, "train", "experiment=tiny", "encoder=conv_fbank", "trainer.max_steps=3"
    )
    assert run.returncode == 0, run.stderr[-4000:]
    output = run.stdout + run.stderr
    assert "ConvFbankEncoder" in output
    model_dir = _model_folder(installed, "tiny_*")
    spec = json.loads(Path(model_dir, "afnext_config.json").read_text())["components"]["encoder"]
    assert spec == {
        "_target_": "afnext_example_plugin.encoder.ConvFbankEncoder",
        "dim": 64,
        "n_bands": 64,
        "window_seconds": 10.0,
    }

    # A plugin connector too, then reload and generate in a fresh process, and chat through the CLI.
    run = _afnext(
        installed, "train", "experiment=tiny", "encoder=conv_fbank", "connector=mean_pool",
        "trainer.max_steps=3", "run_name=with_connector",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    model_dir = _model_folder(installed, "with_connector")
    audio = sorted(Path(installed["AFNEXT_HOME"], "data", "tiny_scenes", "audio").iterdir())[0]
    code = (
        "import sys\n"
        "from afnext import AudioLanguageModel\n"
        "from afnext.data.processor import AudioProcessor\n"
        "model = AudioLanguageModel.from_pretrained(sys.argv[1]).eval()\n"
        "proc = AudioProcessor.from_model(model)\n"
        "batch = proc([{'role': 'user', 'content': '<sound>What happens?'}], audio=[[sys.argv[2]]])\n"
        "out = model.generate(**batch, max_new_tokens=4, do_sample=False)\n"
        "print(type(model.encoder).__name__, type(model.connector).__name__, out.shape[1] > batch['input_ids'].shape[1])\n"
    )
    probe = subprocess.run(
        [sys.executable, "-c", code, model_dir, str(audio)],
        env=installed,
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert probe.stdout.split() == ["ConvFbankEncoder", "MeanPoolConnector", "True"]
    chat = _afnext(installed, "chat", "--checkpoint", model_dir, "--audio", str(audio), "What?",
                   "--max-new-tokens", "4")  # fmt: skip
    assert chat.returncode == 0, chat.stderr[-3000:]


@pytest.mark.slow
def test_a_plugin_data_generator_builds_a_dataset(installed, tmp_path):
    out = tmp_path / "count"
    run = _afnext(
        installed, "data", "build", "generator=count", "source=synthetic", "source.num_scenes=6",
        "source.speech=off", f"out={out}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert rows and all(r["question_type"] == "count" for r in rows)
    for row in rows:
        assert row["conversations"][1]["value"].endswith(str(len(row["timeline"])))
