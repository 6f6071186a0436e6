"""Every error afnext raises on purpose is an ``AfnextError`` (and the builtin kind callers may catch)."""

from __future__ import annotations

import ast
import builtins
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
    for path in sorted([*(ROOT / "afnext").rglob("*.py"), *(ROOT / "kernels").rglob("*.py")]):
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
