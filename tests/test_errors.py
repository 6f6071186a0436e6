"""Every error afnext raises on purpose is an ``AfnextError`` (and the builtin kind callers may catch)."""

from __future__ import annotations

import ast
import builtins
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from afnext.errors import AfnextError, AudioError, ConfigError, UsageError

ROOT = Path(__file__).resolve().parents[1]
# Builtins that are protocols rather than errors: a module's lazy ``__getattr__`` must raise AttributeError,
# an interrupted run re-raises KeyboardInterrupt so the process ends like one, abstract methods.
PROTOCOL = {"AttributeError", "KeyboardInterrupt", "NotImplementedError", "StopIteration"}


def test_no_raise_of_a_bare_builtin_exception_in_the_sources():
    found = []
    paths = sorted([*(ROOT / "afnext").rglob("*.py"), *(ROOT / "kernels").rglob("*.py")])
    # The kernels' layout (ops/<op>.py beside ops/<op>_reference.py, functional.py) is in the scan.
    assert {"functional.py", "flash_attn_varlen.py", "rote_reference.py"} <= {p.name for p in paths}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = target.id if isinstance(target, ast.Name) else None
            kind = getattr(builtins, name, None) if name else None
            if isinstance(kind, type) and issubclass(kind, BaseException) and name not in PROTOCOL:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: raise {name}")
    assert found == [], (
        "use an afnext.errors class (it subclasses the builtin kind):\n" + "\n".join(found)
    )


def test_errors_that_used_to_be_builtins_are_afnext_errors():
    from afnext.audio import load_audio, resample
    from afnext.connectors.stack import FrameStackConnector
    from afnext.interop import save_pretrained

    with pytest.raises(UsageError, match="path, bytes or a binary file object, got int") as err:
        load_audio(12345)
    assert isinstance(err.value, TypeError) and isinstance(err.value, AfnextError)
    with pytest.raises(AudioError, match=r"orig_freq=22050\.5 must be a positive whole number"):
        resample(torch.zeros(100), 22050.5, 16000)
    with pytest.raises(ConfigError, match=r"connector\.stack must be >= 1"):
        FrameStackConnector(in_dim=8, out_dim=8, stack=0)
    with pytest.raises(ConfigError, match="format='onnx' is unknown"):
        save_pretrained(torch.nn.Linear(1, 1), "/nonexistent", format="onnx")


def test_an_afnext_except_clause_catches_kernel_errors():
    # A real `except`, not pytest.raises: `except` matches real subclasses only (virtual ones satisfy isinstance).
    import afnext_kernels
    from afnext import errors
    from afnext_kernels import errors as kernel_errors

    for name in (
        "AfnextError",
        "KernelError",
        "KernelInputError",
        "KernelConfigError",
        "KernelUnavailableError",
    ):
        assert getattr(errors, name) is getattr(kernel_errors, name), name
    calls = [
        lambda: afnext_kernels.rote(
            torch.randn(1, 3, 8), torch.zeros(3), window_duration=30.0, axis_dim=2, impl="reference"
        ),
        lambda: afnext_kernels.set_default_impl("cuda"),
        lambda: afnext_kernels.flash_attn_varlen(
            torch.randn(4, 2, 8), torch.randn(4, 2, 8), torch.randn(4, 2, 8),
            torch.tensor([0, 4], dtype=torch.int32), 4, impl="xformers_typo",
        ),
    ]  # fmt: skip
    caught = []
    for call in calls:
        try:
            call()
        except AfnextError as err:
            caught.append(type(err))
    assert caught == [errors.KernelInputError, errors.KernelConfigError, errors.KernelConfigError]
    assert all(
        issubclass(kind, errors.KernelError) and issubclass(kind, ValueError) for kind in caught
    )


def test_importing_the_errors_stays_light():
    # afnext.errors imports afnext_kernels.errors, which must not pull torch into `afnext --help`.
    code = "import sys, afnext.errors; print(sorted({'torch', 'triton', 'transformers'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
