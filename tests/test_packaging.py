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


def test_nothing_at_the_repository_root_shadows_an_installed_package():
    """A package folder at the root would be imported instead of an installed package of the same name whenever
    Python runs from a checkout (pytest, ``python -m``, ``python -c``): ``kernels/`` did that to transformers."""
    from importlib.metadata import packages_distributions

    installed = packages_distributions()
    roots = [p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()]
    others = {name: set(installed.get(name, ())) - {"afnext"} for name in roots}
    assert {name: dists for name, dists in others.items() if dists} == {}
    assert not (ROOT / "kernels" / "__init__.py").exists()
    assert (ROOT / "kernels" / "afnext_kernels" / "__init__.py").is_file()


def test_transformers_hub_kernels_imports_from_the_repository_root():
    """transformers >= 5.25 imports Hugging Face's ``kernels`` at start; from the root it must get that package."""
    code = (
        "import kernels, afnext_kernels\n"
        "from transformers.integrations import hub_kernels\n"
        "from transformers.activations import ACT2FN\n"
        "print(kernels.__file__)\n"
        "print(afnext_kernels.__file__)"
    )
    run = _run([sys.executable, "-c", code], cwd=ROOT)
    assert run.returncode == 0, run.stderr
    hub, ours = (Path(line) for line in run.stdout.split())
    assert not hub.is_relative_to(ROOT / "kernels")  # the installed package, not our folder
    assert ours == ROOT / "kernels" / "afnext_kernels" / "__init__.py"


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
