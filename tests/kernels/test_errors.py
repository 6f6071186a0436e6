"""The kernels' error family (``afnext_kernels/errors.py``): its shape, and that the kernels stand alone without afnext."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import afnext_kernels
from afnext_kernels import errors

PACKAGE = Path(afnext_kernels.__file__).resolve().parent


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (errors.KernelConfigError, ValueError),
        (errors.KernelInputError, ValueError),
        (errors.KernelUnavailableError, RuntimeError),
    ],
)
def test_each_error_is_a_kernel_error_and_the_builtin_kind(error, builtin):
    assert issubclass(error, errors.KernelError) and issubclass(error, builtin)
    assert issubclass(errors.KernelError, errors.AfnextError) and issubclass(
        errors.AfnextError, Exception
    )


def test_old_names_are_aliases():
    assert errors.InputError is errors.KernelInputError
    assert errors.ConfigError is errors.KernelConfigError
    assert afnext_kernels.KernelUnavailableError is errors.KernelUnavailableError


def test_kernel_sources_never_import_afnext():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [
                f"{path.name}:{node.lineno}: {n}" for n in names if n.split(".")[0] == "afnext"
            ]
    assert found == [], found
    assert (PACKAGE / "ops" / "flash_attn_varlen.py").is_file()  # the scan saw the ops


def test_every_op_raises_a_kernel_input_error():
    calls = [
        lambda: afnext_kernels.flash_attn_varlen(
            torch.randn(4, 2, 8), torch.randn(4, 3, 8), torch.randn(4, 3, 8),
            torch.tensor([0, 4], dtype=torch.int32), 4, impl="reference",
        ),
        lambda: afnext_kernels.linear_cross_entropy(
            torch.randn(3, 4), torch.randn(5, 6), torch.tensor([0, 1, 2]), impl="reference"
        ),
        lambda: afnext_kernels.rote(
            torch.randn(1, 3, 8), torch.zeros(3), window_duration=30.0, axis_dim=2, impl="reference"
        ),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(errors.KernelInputError) as err:
            call()
        assert isinstance(err.value, ValueError)


@pytest.mark.slow
def test_kernels_stand_alone_in_a_fresh_process(tmp_path):
    # One fresh interpreter (they cost seconds each) in which `import triton` fails from the start and so does
    # `import afnext` (and any afnext.* module): the package imports without torch or transformers, the reference
    # path runs, impl="triton" names `pip install triton`, and the kernels raise and catch their own errors
    # without ever importing afnext.
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class BlockAfnext(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "afnext" or name.startswith("afnext."):
                    raise ImportError(f"afnext is blocked in this test: {name}")
                return None

        sys.modules["triton"] = None
        sys.meta_path.insert(0, BlockAfnext())
        import afnext_kernels
        from afnext_kernels.errors import AfnextError, KernelError, KernelInputError, KernelConfigError

        # Importing the package loads no op: not even torch (afnext.errors imports afnext_kernels.errors).
        assert not {"torch", "transformers"} & set(sys.modules), sorted(sys.modules)
        import torch

        q = torch.randn(4, 2, 8)
        cu = torch.tensor([0, 4], dtype=torch.int32)
        afnext_kernels.flash_attn_varlen(q, q, q, cu, 4, impl="reference")
        try:
            afnext_kernels.flash_attn_varlen(q, q, q, cu, 4, impl="triton")
        except afnext_kernels.KernelUnavailableError as err:
            print("MESSAGE:", err)
        try:
            afnext_kernels.rote(torch.randn(1, 3, 8), torch.zeros(3), window_duration=30.0, axis_dim=2)
        except KernelError as err:
            assert isinstance(err, KernelInputError) and isinstance(err, AfnextError), type(err).__mro__
            print("INPUT:", err)
        try:
            afnext_kernels.set_default_impl("cuda")
        except KernelConfigError as err:
            print("CONFIG:", err)
        loss = afnext_kernels.linear_cross_entropy(torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 1, 2]))
        assert loss.isfinite()
        assert not [m for m in sys.modules if m == "afnext" or m.startswith("afnext.")]
        print("AFNEXT MODULES: none")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "pip install triton" in result.stdout
    assert "INPUT: rote: hidden must be (windows, tokens, channels)" in result.stdout
    assert "CONFIG: set_default_impl(impl)='cuda' is not an implementation" in result.stdout
    assert "AFNEXT MODULES: none" in result.stdout
