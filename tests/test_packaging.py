"""``pip install .`` (not editable) ships the package, the Hydra configs and the bundled tokenizer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Build outputs and environments a checkout may hold: a stale *.egg-info/SOURCES.txt would hand setuptools files
# that the package-data declarations do not name, so the wheel is built from a copy without them.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv*", "*.egg-info", "build", "dist", "__pycache__", ".afnext", ".pytest_cache"
)


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


@pytest.mark.slow
def test_wheel_ships_configs_and_assets_and_runs_from_outside_the_checkout(tmp_path):
    """Build the wheel from the sources, install it into a folder of its own and run ``afnext info`` from
    elsewhere: the configs and the tokenizer must come from the installed package, not from this checkout."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    dist, site = tmp_path / "dist", tmp_path / "site"
    pip = [sys.executable, "-m", "pip"]
    _run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        check=True,
    )
    (wheel,) = dist.glob("afnext-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    configs = sorted(
        p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")
    )
    assert configs and [c for c in configs if f"afnext/conf/{c}" not in names] == []
    assets = sorted(p.name for p in (ROOT / "afnext/llms/assets/tiny_tokenizer").iterdir())
    assert [a for a in assets if f"afnext/llms/assets/tiny_tokenizer/{a}" not in names] == []
    assert any(n.startswith("afnext_kernels/") for n in names)

    _run([*pip, "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    cli = "import sys; from afnext.cli import main; sys.exit(main(sys.argv[1:]))"
    run = _run(
        [sys.executable, "-c", cli, "info", "connector=stack_mlp", "--json"], cwd=tmp_path, env=env
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["connector"]["class"] == "FrameStackConnector"
    code = (
        "import afnext.conf, afnext.llms.tokenizer as t\n"
        "from transformers import AutoTokenizer\n"
        "assert len(AutoTokenizer.from_pretrained(t.TINY_TOKENIZER_DIR)) == 1024\n"
        "print(afnext.conf.__file__)"
    )
    probe = _run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True)
    assert Path(probe.stdout.strip()).is_relative_to(site)
