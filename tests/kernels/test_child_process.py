"""Reruns this folder in a child process under ``TRITON_INTERPRET=1`` when this process cannot interpret Triton.

That happens on hosts without CUDA when triton was imported before ``tests/conftest.py`` could set
``TRITON_INTERPRET=1`` (see this folder's ``conftest.py``); normally it is not, and this runner skips. The folder's tests are then
skipped in this process and run here instead, with the same ``-m`` selection split into its fast and slow parts so
each CI step runs its own share. Where the interpreter works in this process the runner skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

KERNEL_TESTS = Path(__file__).resolve().parent


def _targets(config: pytest.Config) -> list[str]:
    """The command line's paths (files, node ids) inside this folder, else the whole folder."""
    start = Path(config.invocation_params.dir)
    targets = []
    for arg in config.args:
        file_part, sep, node = arg.partition("::")
        path = (start / file_part).resolve()
        if path != Path(__file__).resolve() and (
            path == KERNEL_TESTS or KERNEL_TESTS in path.parents
        ):
            targets.append(f"{path}{sep}{node}")
    return targets or [str(KERNEL_TESTS)]


@pytest.mark.parametrize("part", ["not slow", pytest.param("slow", marks=pytest.mark.slow)])
def test_kernel_tests_in_child_process(request, interpreter_in_process, part):
    if interpreter_in_process:
        pytest.skip("the Triton interpreter works in this process: this folder's tests ran here")
    selection = request.config.option.markexpr
    markexpr = f"({selection}) and {part}" if selection else part
    root = KERNEL_TESTS.parents[1]
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *_targets(request.config),
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    cmd += ["-m", markexpr]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1500)
    tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-40:])
    # 5: nothing selected (for example `-m gpu` on a host without CUDA).
    assert result.returncode in (0, 5), f"child pytest ({' '.join(cmd[3:])}) failed:\n{tail}"
