"""Autograd wrapper and launch logic of the Triton variable-length flash attention."""

from __future__ import annotations

import math
from typing import Any

import torch

from afnext_kernels._triton import check_device, load_kernels, require_triton

__all__ = ["FlashAttnVarlenFunction", "flash_attn_varlen_triton"]

_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)


def _seqlen_bucket(max_seqlen: int) -> int:
    # Autotuning key: encoder windows and short documents tune once, long packs once more.
    return 0 if max_seqlen <= 4096 else 1


def _block_d(dim: int) -> int:
    return max(16, 1 << (dim - 1).bit_length())


def _fixed(kind: str, dtype: torch.dtype, dim: int, interpreted: bool) -> Any:
    """The configuration used when autotuning is off (interpreter, ``AFNEXT_KERNELS_AUTOTUNE=0``)."""
    import triton

    if interpreted:
        # Small and unequal blocks so CPU tests cross block edges with short sequences.
        bm, bn = {"fwd": (32, 32), "dkdv": (16, 32), "dq": (32, 16)}[kind]
        return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        bm, bn, warps, stages = {
            "fwd": (64, 32, 4, 2),
            "dkdv": (32, 32, 4, 2),
            "dq": (32, 32, 4, 2),
        }[kind]
    else:
        wide = dim > 64
        bm, bn, warps, stages = {
            "fwd": (128, 64, 8 if wide else 4, 3),
            "dkdv": (32, 64, 4, 3),
            "dq": (64, 32, 4, 3),
        }[kind]
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


class FlashAttnVarlenFunction(torch.autograd.Function):
    """``flash_attn_varlen`` forward and backward on Triton kernels (inputs validated by the caller)."""

    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cu_seqlens_q: torch.Tensor,
        cu_seqlens_k: torch.Tensor,
        max_seqlen_q: int,
        max_seqlen_k: int,
        causal: bool,
        window: tuple[int, int],
        softmax_scale: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``out`` ``(total_q, heads, dim)`` and ``lse`` ``(heads, total_q)`` (natural log, float32)."""
        import triton

        fwd = load_kernels("attention.triton_fwd")
        check_device("flash_attn_varlen", q, fwd)
        q, k, v = (_last_dim_contiguous(x) for x in (q, k, v))
        total_q, heads, dim = q.shape
        batch = cu_seqlens_q.numel() - 1
        left, right = window
        if causal:
            right = 0
        out = torch.empty_like(q)
        lse2 = torch.empty((heads, total_q), device=q.device, dtype=torch.float32)
        meta = {
            "GROUP": heads // k.shape[1],
            "HEAD_DIM": dim,
            "BLOCK_D": _block_d(dim),
            "HAS_LEFT": left >= 0,
            "HAS_RIGHT": right >= 0,
            "DOT_PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
        }
        if batch > 0 and total_q > 0:
            fwd.attention_fwd_kernel(
                lambda m: (triton.cdiv(max_seqlen_q, m["BLOCK_M"]), batch, heads),
                _fixed("fwd", q.dtype, dim, fwd.INTERPRETED),
                q, k, v, out, lse2, cu_seqlens_q, cu_seqlens_k,
                softmax_scale * _LOG2E,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                v.stride(0), v.stride(1), out.stride(0), out.stride(1),
                total_q, max(left, 0), max(right, 0), _seqlen_bucket(max_seqlen_q),
                **meta,
            )  # fmt: skip
        ctx.save_for_backward(q, k, v, out, lse2, cu_seqlens_q, cu_seqlens_k)
        ctx.max_seqlen = (max_seqlen_q, max_seqlen_k)
        ctx.window = (left, right)
        ctx.softmax_scale = softmax_scale
        ctx.meta = meta
        lse = lse2 * _LN2
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor, _dlse: torch.Tensor | None) -> tuple[Any, ...]:
        """Gradients for ``q``, ``k``, ``v``; ``None`` for the rest."""
        import triton

        bwd = load_kernels("attention.triton_bwd")
        q, k, v, out, lse2, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
        dout = _last_dim_contiguous(dout)
        max_seqlen_q, max_seqlen_k = ctx.max_seqlen
        left, right = ctx.window
        meta = ctx.meta
        total_q, heads, dim = q.shape
        kv_heads = k.shape[1]
        batch = cu_seqlens_q.numel() - 1
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        if batch == 0 or total_q == 0:
            return dq.zero_(), dk.zero_(), dv.zero_(), *([None] * 7)
        delta = torch.empty_like(lse2)
        block_t = 16 if bwd.INTERPRETED else 64
        bwd.attention_bwd_preprocess[(triton.cdiv(total_q, block_t), heads)](
            out, dout, delta, out.stride(0), out.stride(1), dout.stride(0), dout.stride(1), total_q,
            HEAD_DIM=dim, BLOCK_D=meta["BLOCK_D"], BLOCK_T=block_t,
        )  # fmt: skip
        scale = ctx.softmax_scale
        common = (
            scale * _LOG2E, scale,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            dout.stride(0), dout.stride(1),
        )  # fmt: skip
        tail = (total_q, max(left, 0), max(right, 0))
        # Every key row is written by the dK/dV kernel, with zeros where no query sees the key.
        bwd.attention_bwd_dkdv_kernel(
            lambda m: (triton.cdiv(max_seqlen_k, m["BLOCK_N"]), batch, kv_heads),
            _fixed("dkdv", q.dtype, dim, bwd.INTERPRETED),
            q, k, v, dout, dk, dv, lse2, delta, cu_seqlens_q, cu_seqlens_k, *common,
            dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
            *tail, _seqlen_bucket(max_seqlen_k), **meta,
        )  # fmt: skip
        bwd.attention_bwd_dq_kernel(
            lambda m: (triton.cdiv(max_seqlen_q, m["BLOCK_M"]), batch, heads),
            _fixed("dq", q.dtype, dim, bwd.INTERPRETED),
            q, k, v, dout, dq, lse2, delta, cu_seqlens_q, cu_seqlens_k, *common,
            dq.stride(0), dq.stride(1),
            *tail, _seqlen_bucket(max_seqlen_q), **meta,
        )  # fmt: skip
        return dq, dk, dv, *([None] * 7)


def flash_attn_varlen_triton(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton varlen attention (validated inputs); returns ``out`` and natural-log ``lse`` ``(heads, total_q)``."""
    require_triton()
    return FlashAttnVarlenFunction.apply(
        q,
        k,
        v,
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        causal,
        window,
        softmax_scale,
    )
