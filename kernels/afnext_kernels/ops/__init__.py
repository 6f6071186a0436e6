"""The ops, laid out as Liger-Kernel's ``src/liger_kernel/ops/``: one module per op for its Triton implementation
and one beside it for its PyTorch reference.

* ``<op>.py``: the ``@triton.jit`` kernels (``_<op>_fwd_kernel``, ``_<op>_bwd_kernel``), the
  ``<Op>Function(torch.autograd.Function)`` and the Python launch code, entered through ``<op>_triton``.
  It imports ``triton`` at module level and is loaded on the op's first Triton call by
  :func:`afnext_kernels._triton.load_kernels`, never imported here.
* ``<op>_reference.py``: the pure-PyTorch reference, the spec of the kernels and the path off CUDA.

Ops: ``flash_attn_varlen`` (its backward kernels in ``flash_attn_varlen_bwd.py`` to keep files short),
``linear_cross_entropy``, ``rote``. Inputs are validated by the public functions in :mod:`afnext_kernels.functional`.
"""

from __future__ import annotations

__all__: list[str] = []
