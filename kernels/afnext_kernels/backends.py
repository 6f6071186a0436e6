"""Optional third-party attention backends behind ``flash_attn_varlen(impl="xformers" | "flash_attn")``.

Both are optional: where the package is missing, or installed but its compiled operators do not load (a
wheel built for another torch / CUDA), the call raises :class:`KernelUnavailableError` saying so and what to do.
"""

from __future__ import annotations

from typing import Any

import torch

from afnext_kernels.errors import KernelUnavailableError

__all__ = ["backend_available", "load_flash_attn", "load_xformers", "run_backend"]


def load_flash_attn() -> Any:
    """Return ``flash_attn.flash_attn_varlen_func`` or raise an actionable error."""
    try:
        from flash_attn import flash_attn_varlen_func
    except (ImportError, OSError) as err:
        raise KernelUnavailableError(
            f"impl='flash_attn' needs the flash-attn package (Dao-AILab/flash-attention), which is not installed "
            f"or not loadable here ({type(err).__name__}: {err}). Install a wheel built for this torch and CUDA "
            "(`pip install flash-attn --no-build-isolation`), or use impl='triton' or impl='reference'."
        ) from err
    return flash_attn_varlen_func


def load_xformers() -> Any:
    """Return ``xformers.ops`` with working compiled operators, or raise an actionable error."""
    try:
        import xformers
        import xformers.ops as xops
    except (ImportError, OSError) as err:
        raise KernelUnavailableError(
            f"impl='xformers' needs the xformers package, which is not installed or not loadable here "
            f"({type(err).__name__}: {err}). Install the xformers build made for this torch "
            "(`pip install xformers` matching torch's version), or use impl='triton' or impl='reference'."
        ) from err
    if not getattr(xformers, "_has_cpp_library", True):
        raise KernelUnavailableError(
            "impl='xformers': xformers imports but its compiled operators did not load (it was built for another "
            "torch / CUDA; `python -m xformers.info` shows why). Reinstall the xformers build matching this torch, "
            "or use impl='triton' or impl='reference'."
        )
    return xops


def backend_available(name: str) -> bool:
    """Whether ``flash_attn_varlen(impl=name)`` can load its backend here (``"xformers"`` / ``"flash_attn"``)."""
    try:
        (load_xformers if name == "xformers" else load_flash_attn)()
    except KernelUnavailableError:
        return False
    return True


def _run_xformers(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    *,
    causal: bool,
    window: tuple[int, int],
    softmax_scale: float,
) -> torch.Tensor:
    xops = load_xformers()
    from xformers.ops import fmha

    lens_q = cu_seqlens_q.diff().tolist()
    lens_k = cu_seqlens_k.diff().tolist()
    left = window[0]
    bias_types = fmha.attn_bias
    if not causal and window == (-1, -1):
        bias = bias_types.BlockDiagonalMask.from_seqlens(q_seqlen=lens_q, kv_seqlen=lens_k)
    elif causal and left < 0:
        bias = bias_types.BlockDiagonalCausalFromBottomRightMask.from_seqlens(
            q_seqlen=lens_q, kv_seqlen=lens_k
        )
    elif causal:
        # xformers' local window counts the query's own key: i - window_size < j <= i.
        bias = bias_types.BlockDiagonalCausalLocalAttentionFromBottomRightMask.from_seqlens(
            q_seqlen=lens_q, kv_seqlen=lens_k, window_size=left + 1
        )
    else:
        raise KernelUnavailableError(
            f"impl='xformers' covers bidirectional attention without a window and causal attention with an "
            f"optional left window; got causal={causal}, window={window}. Use impl='triton'."
        )
    total_q, heads, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    # Grouped-query attention in xformers' BMGHK layout: G = key/value heads, H = query heads per group.
    qg = q.reshape(1, total_q, kv_heads, group, dim)
    kg = k[None, :, :, None, :].expand(1, k.shape[0], kv_heads, group, dim)
    vg = v[None, :, :, None, :].expand(1, v.shape[0], kv_heads, group, dim)
    try:
        out = xops.memory_efficient_attention(qg, kg, vg, attn_bias=bias, scale=softmax_scale)
    except NotImplementedError as err:
        raise KernelUnavailableError(
            f"impl='xformers': no xformers operator accepts these inputs here ({err}). Use impl='triton'."
        ) from err
    return out.reshape(total_q, heads, dim)


def run_backend(
    name: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    causal: bool,
    window: tuple[int, int],
    softmax_scale: float,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``flash_attn_varlen`` on a third-party backend (inputs as in :func:`afnext_kernels.flash_attn_varlen`).

    Returns:
        ``out`` ``(total_q, heads, dim)`` and, for flash-attn with ``return_lse``, its log-sum-exp.
    """
    if name == "flash_attn":
        fn = load_flash_attn()
        if not q.is_cuda:
            raise KernelUnavailableError(
                "impl='flash_attn' runs on CUDA tensors only; use impl='reference' on CPU."
            )
        result = fn(
            q, k, v, cu_seqlens_q.to(torch.int32), cu_seqlens_k.to(torch.int32), max_seqlen_q, max_seqlen_k,
            dropout_p=0.0, softmax_scale=softmax_scale, causal=causal, window_size=window,
            return_attn_probs=return_lse,
        )  # fmt: skip
        if return_lse:
            return result[0], result[1]
        return result, None
    if return_lse:
        raise KernelUnavailableError(
            "impl='xformers' does not return the log-sum-exp here; use impl='triton'."
        )
    if not q.is_cuda:
        load_xformers()  # a missing package is the more useful message
        raise KernelUnavailableError(
            "impl='xformers' runs on CUDA tensors only; use impl='reference' on CPU."
        )
    out = _run_xformers(
        q,
        k,
        v,
        cu_seqlens_q,
        cu_seqlens_k,
        causal=causal,
        window=window,
        softmax_scale=softmax_scale,
    )
    return out, None
