"""The import layers of docs/architecture.md hold (import-linter, configured in pyproject.toml), and the check
fails when a lower layer imports a higher one."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"


def _lint(cwd: Path, *args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([LINT, *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_afnext_keeps_its_layers():
    run = _lint(ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_the_check_fails_on_an_import_from_below(tmp_path):
    """A two-layer package whose lower layer imports the upper one (a cycle through the layers)."""
    package = tmp_path / "layered"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "high.py").write_text("from layered import low\n")
    (package / "low.py").write_text("def f():\n    from layered import high\n    return high\n")
    (tmp_path / ".importlinter").write_text(
        "[importlinter]\nroot_package = layered\n\n"
        "[importlinter:contract:layers]\nname = layers\ntype = layers\nlayers =\n    layered.high\n    layered.low\n"
    )
    run = _lint(tmp_path, pythonpath=str(tmp_path))
    assert run.returncode != 0
    assert "layered.low is not allowed to import layered.high" in run.stdout
