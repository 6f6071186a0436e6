"""Dispatch (``dispatch.py``) and lazy Triton loading (``_triton.py``): precedence of impl= / set_default_impl /
AFNEXT_KERNELS_IMPL, one loader for every op's Triton module, and errors that say what to do."""

from __future__ import annotations

import importlib
import sys
import types

import pytest
import torch

import afnext_kernels
from afnext_kernels._triton import check_device, load_kernels
from afnext_kernels.backends import backend_available
from afnext_kernels.dispatch import ENV_VAR, resolve_impl
from afnext_kernels.errors import KernelConfigError, KernelUnavailableError


@pytest.fixture(autouse=True)
def _clean_default(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    afnext_kernels.set_default_impl(None)
    yield
    afnext_kernels.set_default_impl(None)


def test_auto_picks_reference_on_cpu_and_triton_on_cuda():
    assert resolve_impl("auto", torch.zeros(1)) == "reference"
    assert resolve_impl("auto", torch.zeros(1, device="meta").to("meta")) == "reference"
    cuda_like = types.SimpleNamespace(device=torch.device("cuda"))
    assert resolve_impl("auto", cuda_like) == "triton"


def test_precedence_call_then_default_then_environment(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.setenv(ENV_VAR, "triton")
    assert resolve_impl("auto", x) == "triton"
    afnext_kernels.set_default_impl("reference")
    assert resolve_impl("auto", x) == "reference"
    assert resolve_impl("triton", x) == "triton"
    assert afnext_kernels.get_default_impl() == "reference"


def test_attention_only_default_leaves_other_ops_on_auto():
    afnext_kernels.set_default_impl("xformers")
    assert resolve_impl("auto", torch.zeros(1)) == "reference"
    assert (
        resolve_impl("auto", torch.zeros(1), allowed=("auto", "triton", "reference", "xformers"))
        == "xformers"
    )


@pytest.mark.parametrize("bad", ["cuda", "Triton", "ref"])
def test_bad_names_raise_config_error(monkeypatch, bad):
    with pytest.raises(KernelConfigError, match="not an implementation"):
        afnext_kernels.set_default_impl(bad)
    monkeypatch.setenv(ENV_VAR, bad)
    with pytest.raises(KernelConfigError, match=ENV_VAR):
        resolve_impl("auto", torch.zeros(1))


def test_cpu_triton_without_interpreter_says_what_to_do(monkeypatch):
    compiled = types.SimpleNamespace(INTERPRETED=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(
        KernelUnavailableError, match=r"TRITON_INTERPRET=1 is not in effect \(it is not set\)"
    ):
        check_device("flash_attn_varlen", torch.zeros(1), compiled)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(KernelUnavailableError, match=r"set only after .*Export TRITON_INTERPRET=1"):
        check_device("flash_attn_varlen", torch.zeros(1), compiled)
    check_device("flash_attn_varlen", torch.zeros(1), types.SimpleNamespace(INTERPRETED=True))
    with pytest.raises(KernelUnavailableError, match="meta tensor"):
        check_device("flash_attn_varlen", torch.zeros(1, device="meta"), compiled)


@pytest.mark.parametrize("backend", ["xformers", "flash_attn"])
def test_missing_backends_give_a_clear_message(backend):
    if backend_available(backend):
        pytest.skip(f"{backend} is installed and loadable here")
    q = torch.randn(4, 2, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    with pytest.raises(KernelUnavailableError, match=r"not installed or not loadable.*pip install"):
        afnext_kernels.flash_attn_varlen(q, q, q, cu, 4, impl=backend)


def test_dispatch_reaches_the_chosen_implementation(monkeypatch):
    # The environment variable and the process default route a real call (CPU tensor, impl="auto").
    import afnext_kernels.functional as functional

    seen = []

    def fake(q, *args, **kwargs):
        seen.append("triton")
        return q, q.new_zeros(q.shape[1], q.shape[0])

    def load_kernels(op):
        assert op == "flash_attn_varlen"
        return types.SimpleNamespace(flash_attn_varlen_triton=fake)

    monkeypatch.setattr(functional, "load_kernels", load_kernels)
    q = torch.randn(4, 2, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    monkeypatch.setenv(ENV_VAR, "triton")
    afnext_kernels.flash_attn_varlen(q, q, q, cu, 4)
    assert seen == ["triton"]
    afnext_kernels.set_default_impl("reference")
    out = afnext_kernels.flash_attn_varlen(q, q, q, cu, 4)
    assert seen == ["triton"] and out.shape == q.shape


def test_triton_missing_gives_a_clear_error(monkeypatch):
    # `import triton` fails (None in sys.modules): each op's impl="triton" names `pip install triton`.
    monkeypatch.setitem(sys.modules, "triton", None)
    q = torch.randn(4, 2, 8)
    cu = torch.tensor([0, 4], dtype=torch.int32)
    calls = [
        lambda: afnext_kernels.flash_attn_varlen(q, q, q, cu, 4, impl="triton"),
        lambda: afnext_kernels.linear_cross_entropy(
            torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 1, 2]), impl="triton"
        ),
        lambda: afnext_kernels.rote(
            torch.randn(1, 3, 8), torch.zeros(1, 3), window_duration=30.0, axis_dim=2, impl="triton"
        ),
    ]
    for call in calls:
        with pytest.raises(KernelUnavailableError, match="pip install triton"):
            call()


@pytest.mark.parametrize(
    ("op", "function"),
    [
        ("flash_attn_varlen", "FlashAttnVarlenFunction"),
        ("linear_cross_entropy", "LinearCrossEntropyFunction"),
        ("rote", "RoteFunction"),
    ],
)
def test_each_op_has_one_triton_module_loaded_by_the_one_loader(op, function):
    # ops/<op>.py holds the kernels, the autograd Function and the <op>_triton entry the public function calls.
    pytest.importorskip("triton")
    module = load_kernels(op)
    assert module.__name__ == f"afnext_kernels.ops.{op}"
    assert issubclass(getattr(module, function), torch.autograd.Function)
    assert callable(getattr(module, f"{op}_triton"))
    assert hasattr(module, f"_{op}_fwd_kernel") and isinstance(module.INTERPRETED, bool)
    reference = importlib.import_module(f"afnext_kernels.ops.{op}_reference")
    assert getattr(afnext_kernels, f"{op}_reference") is getattr(reference, f"{op}_reference")
