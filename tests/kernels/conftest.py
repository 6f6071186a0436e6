"""Kernel tests: Triton interpreter on hosts without CUDA, device / dtype grids, naive references.

``TRITON_INTERPRET=1`` must be in the environment before ``triton`` is first imported in the process: triton
builds its own ``@jit`` helpers (``tl.sum``, ``tl.zeros``, ...) at import (see ``afnext_kernels._triton``). On a
host without CUDA this conftest sets it when it is loaded (and leaves it set), which is early enough when only
this folder runs, since importing torch does not import triton. In a whole-suite run other folders have usually
imported transformers, and with it triton, before this folder is collected, so ``tests/conftest.py`` sets it before
any test module is imported. Where triton was imported even earlier (a pytest plugin, say), the interpreter
cannot be switched on in that process any more: every test of this folder is skipped there and
``test_child_process.py`` reruns the folder in a child process started with ``TRITON_INTERPRET=1`` (same ``-m``
selection).
On a CUDA host nothing is changed: the kernels compile for the GPU and the CPU (interpreter) cases skip.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
KERNEL_TESTS = Path(__file__).resolve().parent
CHILD_RUNNER = "test_kernel_tests_in_child_process"


def _has_triton() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


HAS_TRITON = _has_triton()
if not HAS_CUDA and "triton" not in sys.modules and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"


def _interpreter_in_process() -> bool:
    """Whether this folder's Triton-on-CPU tests can run in this process (trivially so on CUDA / without triton)."""
    if HAS_CUDA or not HAS_TRITON:
        return True
    from afnext_kernels._triton import interpreter_active

    return interpreter_active()


INTERPRETER_IN_PROCESS = _interpreter_in_process()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder's tests where the interpreter cannot run in-process; the child-process runner covers them."""
    if INTERPRETER_IN_PROCESS:
        return
    skip = pytest.mark.skip(
        reason="triton was imported before TRITON_INTERPRET=1 could be set; run in a child process by "
        f"{CHILD_RUNNER}"
    )
    for item in items:
        path = Path(str(item.path)).resolve()
        if KERNEL_TESTS in path.parents and getattr(item, "originalname", "") != CHILD_RUNNER:
            item.add_marker(skip)


@pytest.fixture
def interpreter_in_process() -> bool:
    """Whether the Triton interpreter works in this process (see the module docstring)."""
    return INTERPRETER_IN_PROCESS


def _device_params() -> list:
    """``cpu`` (Triton through the interpreter) and ``cuda`` (marked ``gpu``, skipped without CUDA)."""
    return [
        pytest.param("cpu", id="cpu"),
        pytest.param(
            "cuda",
            id="cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA")],
        ),
    ]


def _require_impl(impl: str, device: str) -> None:
    """Skip Triton cases that cannot run here (no triton; CPU tensors on a host whose kernels compile for CUDA)."""
    if impl != "triton":
        return
    pytest.importorskip("triton")
    if device == "cpu" and HAS_CUDA:
        pytest.skip(
            "CUDA host: Triton kernels are compiled for the GPU, the interpreter is not used"
        )


def _naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lens_q: list[int],
    lens_k: list[int],
    *,
    causal: bool,
    window: tuple[int, int],
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense float32 attention over the whole pack with an explicit ``(total_q, total_k)`` mask.

    Independent of afnext_kernels: sequence ``b`` of queries sees sequence ``b`` of keys; query ``i`` sits at key
    position ``i + len_k - len_q``; keys ``j`` with ``pos - left <= j <= pos + right`` (``-1`` unbounded,
    ``causal`` forces ``right = 0``). Returns ``out (total_q, H, D)`` and natural-log ``lse (H, total_q)``.
    """
    heads, kv_heads, dim = q.shape[1], k.shape[1], q.shape[2]
    scale = dim**-0.5 if scale is None else scale
    left, right = window
    right = 0 if causal else right
    total_q, total_k = sum(lens_q), sum(lens_k)
    allowed = torch.zeros(total_q, total_k, dtype=torch.bool, device=q.device)
    q0 = k0 = 0
    for lq, lk in zip(lens_q, lens_k):
        pos = torch.arange(lq, device=q.device)[:, None] + (
            lk - lq
        )  # query i sits at key position pos
        j = torch.arange(lk, device=q.device)[None, :]
        ok = torch.ones(lq, lk, dtype=torch.bool, device=q.device)
        if left >= 0:
            ok &= j >= pos - left
        if right >= 0:
            ok &= j <= pos + right
        allowed[q0 : q0 + lq, k0 : k0 + lk] = ok
        q0, k0 = q0 + lq, k0 + lk
    group = heads // kv_heads
    kk = k.float().repeat_interleave(group, dim=1)  # (Tk, H, D)
    vv = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), kk) * scale
    scores = scores.masked_fill(~allowed, -math.inf)
    lse = torch.logsumexp(scores, dim=-1)  # (H, Tq)
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows without keys: zeros
    out = torch.einsum("hqk,khd->qhd", probs, vv)
    return out, lse


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that take ``device`` run on ``cpu`` (Triton through the interpreter) and ``cuda`` (marked ``gpu``)."""
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", _device_params())


@pytest.fixture
def require_impl() -> Callable[[str, str], None]:
    """``require_impl(impl, device)`` skips Triton cases that cannot run here."""
    return _require_impl


@pytest.fixture
def naive_attention() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """Dense attention with an explicit mask, independent of afnext_kernels (see ``_naive_attention``)."""
    return _naive_attention
