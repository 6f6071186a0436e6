"""Triton variable-length flash attention: forward kernel, autograd Function and launch code.

FlashAttention-2 (Dao, arXiv 2307.08691, Algorithm 1) over packed sequences: one program owns ``BLOCK_M``
queries of one head of one sequence, streams that sequence's keys and values in ``BLOCK_N`` blocks with an
online softmax (running max ``m``, running sum ``l``) and never forms the ``N x N`` score matrix. The loop
structure follows Triton's fused-attention tutorial (``python/tutorials/06-fused-attention.py``): scores are
kept in base 2 (``exp2`` with ``scale * log2(e)`` folded in), and the key range is walked in three stages:
masked blocks on the band's left edge, blocks that need no mask (every query of the block sees every key of
the block), masked blocks on the right edge (the causal diagonal, the sequence end). The log-sum-exp is saved
(base 2, ``(heads, total_q)``) for the backward kernels, which live in :mod:`afnext_kernels.ops.flash_attn_varlen_bwd`
(one module would pass 600 lines) and are loaded on the first backward pass.

The loops call no other ``@triton.jit`` function (only the range helper runs, once per program): the
interpreter re-patches ``triton.language`` on every such call, which made CPU tests an order of magnitude slower.
Semantics (masks, alignment, grouped-query heads) are those of
:func:`afnext_kernels.ops.flash_attn_varlen_reference.flash_attn_varlen_reference`.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
import triton
import triton.language as tl

from afnext_kernels._triton import TunableKernel, check_device, interpreter_active, load_kernels

INTERPRETED = interpreter_active()

# _band_range is shared with the backward kernels.
__all__ = ["INTERPRETED", "FlashAttnVarlenFunction", "flash_attn_varlen_triton"]


@triton.jit
def _band_range(start, last, shift, n_other, lower, upper, HAS_LOWER: tl.constexpr, HAS_UPPER: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """Blocks of the other axis that items ``start..last`` of this axis see.

    Item ``i`` sees the other axis' ``[i + shift - lower, i + shift + upper]`` (a bound is absent unless its
    ``HAS_`` flag is set) within ``[0, n_other)``. Queries looking for keys use ``shift = off``,
    ``(lower, upper) = (left, right)``; keys looking for queries ``shift = -off``, ``(lower, upper) = (right, left)``.

    Returns:
        ``lo, full_lo, full_hi, hi``: ``[lo, hi)`` holds every block some item sees, ``[full_lo, full_hi)`` the
        blocks every item sees entirely (no mask needed); all but ``hi`` are multiples of ``BLOCK``.
    """
    lo = n_other * 0
    hi = n_other
    full_lo = n_other * 0
    full_hi = (n_other // BLOCK) * BLOCK
    if HAS_LOWER:
        lo = (tl.maximum(start + shift - lower, 0) // BLOCK) * BLOCK
        full_lo = ((tl.maximum(last + shift - lower, 0) + BLOCK - 1) // BLOCK) * BLOCK
    if HAS_UPPER:
        hi = tl.minimum(tl.maximum(last + shift + upper + 1, 0), n_other)
        full_hi = (tl.maximum(tl.minimum(start + shift + upper + 1, n_other), 0) // BLOCK) * BLOCK
    full_lo = tl.minimum(tl.maximum(full_lo, lo), hi)
    full_hi = tl.maximum(tl.minimum(full_hi, hi), full_lo)
    return lo, full_lo, full_hi, hi


@triton.jit
def _flash_attn_varlen_fwd_kernel(
    Q, K, V, OUT, LSE,
    cu_seqlens_q, cu_seqlens_k,
    qk_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    total_q, window_left, window_right, seqlen_bucket,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid ``(cdiv(max_seqlen_q, BLOCK_M), batch, heads)``; see the module docstring."""
    pid_m = tl.program_id(0)
    seq = tl.program_id(1)
    head = tl.program_id(2)
    q_start = tl.load(cu_seqlens_q + seq)
    len_q = tl.load(cu_seqlens_q + seq + 1) - q_start
    start_m = pid_m * BLOCK_M
    if start_m >= len_q:
        return
    k_start = tl.load(cu_seqlens_k + seq)
    len_k = tl.load(cu_seqlens_k + seq + 1) - k_start
    off = len_k - len_q  # bottom-right alignment: query i sits at key position i + off
    kv_head = head // GROUP

    # 64-bit scalar bases (token x stride passes 2**31 in long packs, and in one long sequence); the offsets
    # inside a block (block rows x stride) stay 32-bit.
    q_base = Q + (q_start + start_m).to(tl.int64) * stride_qt + head.to(tl.int64) * stride_qh
    o_base = OUT + (q_start + start_m).to(tl.int64) * stride_ot + head.to(tl.int64) * stride_oh
    k_base = K + k_start.to(tl.int64) * stride_kt + kv_head.to(tl.int64) * stride_kh
    v_base = V + k_start.to(tl.int64) * stride_vt + kv_head.to(tl.int64) * stride_vh

    offs_m = tl.arange(0, BLOCK_M)
    rows = start_m + offs_m
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    q = tl.load(
        q_base + offs_m[:, None] * stride_qt + offs_d[None, :],
        mask=(rows[:, None] < len_q) & d_ok[None, :],
        other=0.0,
    )

    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # Key blocks some query of the block sees, and those all its queries see entirely (no mask needed).
    last_m = tl.minimum(start_m + BLOCK_M, len_q) - 1
    lo, full_lo, full_hi, hi = _band_range(
        start_m, last_m, off, len_k, window_left, window_right, HAS_LEFT, HAS_RIGHT, BLOCK_N
    )

    for stage in tl.static_range(3):
        if stage == 0:
            stage_lo = lo
            stage_hi = full_lo
        elif stage == 1:
            stage_lo = full_lo
            stage_hi = full_hi
        else:
            stage_lo = full_hi
            stage_hi = hi
        for start_n in range(stage_lo, stage_hi, BLOCK_N):
            start_n = tl.multiple_of(start_n, BLOCK_N)
            cols = start_n + offs_n
            start_n64 = start_n.to(tl.int64)
            kt_ptrs = (k_base + start_n64 * stride_kt) + (
                offs_n[None, :] * stride_kt + offs_d[:, None]
            )
            v_ptrs = (v_base + start_n64 * stride_vt) + (
                offs_n[:, None] * stride_vt + offs_d[None, :]
            )
            if stage == 1:
                if BLOCK_D == HEAD_DIM:
                    kt = tl.load(kt_ptrs)
                else:
                    kt = tl.load(kt_ptrs, mask=d_ok[:, None], other=0.0)
            else:
                kt = tl.load(kt_ptrs, mask=(cols[None, :] < len_k) & d_ok[:, None], other=0.0)
            qk = tl.dot(q, kt, input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N) float32
            if stage == 1:
                m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
                p = tl.math.exp2(qk * qk_scale - m_ij[:, None])
                alpha = tl.math.exp2(m_i - m_ij)
            else:
                keep = cols[None, :] < len_k
                if HAS_LEFT:
                    keep = keep & (cols[None, :] >= rows[:, None] + off - window_left)
                if HAS_RIGHT:
                    keep = keep & (cols[None, :] <= rows[:, None] + off + window_right)
                qk = tl.where(keep, qk * qk_scale, float("-inf"))
                m_ij = tl.maximum(m_i, tl.max(qk, 1))
                # A row that has seen no key yet keeps m = -inf; shift by 0 to avoid (-inf) - (-inf).
                m_shift = tl.where(m_ij == float("-inf"), 0.0, m_ij)
                p = tl.math.exp2(qk - m_shift[:, None])
                alpha = tl.math.exp2(m_i - m_shift)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
            if stage == 1:
                if BLOCK_D == HEAD_DIM:
                    v = tl.load(v_ptrs)
                else:
                    v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
            else:
                v = tl.load(v_ptrs, mask=(cols[:, None] < len_k) & d_ok[None, :], other=0.0)
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
            m_i = m_ij

    empty = l_i == 0.0  # the query sees no key: output 0, log-sum-exp -inf
    acc = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("-inf"), m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))
    tl.store(LSE + head.to(tl.int64) * total_q + q_start + rows, lse, mask=rows < len_q)
    o_ptrs = o_base + offs_m[:, None] * stride_ot + offs_d[None, :]
    tl.store(o_ptrs, acc.to(OUT.dtype.element_ty), mask=(rows[:, None] < len_q) & d_ok[None, :])


def _fwd_configs() -> list[triton.Config]:
    # Few candidates (each costs a compilation): Hopper prefers 128x128 with 8 warps for head dim 128,
    # Ampere 128x64 with 4 warps; the 64x64 entry covers fp32 and small shared memory.
    shapes = [
        (128, 128, 8, 3),
        (128, 64, 4, 3),
        (128, 64, 8, 4),
        (128, 128, 8, 2),
        (64, 64, 4, 3),
        (128, 32, 4, 4),
    ]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in shapes
    ]


flash_attn_varlen_fwd_kernel = TunableKernel(
    _flash_attn_varlen_fwd_kernel,
    _fwd_configs(),
    key=["HEAD_DIM", "HAS_LEFT", "HAS_RIGHT", "seqlen_bucket"],
    interpreted=INTERPRETED,
)


_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)


def _seqlen_bucket(max_seqlen: int) -> int:
    # Autotuning key: encoder windows and short documents tune once, long packs once more.
    return 0 if max_seqlen <= 4096 else 1


def _block_d(dim: int) -> int:
    return max(16, 1 << (dim - 1).bit_length())


def _fixed(kind: str, dtype: torch.dtype, dim: int, interpreted: bool) -> Any:
    """The configuration used when autotuning is off (interpreter, ``AFNEXT_KERNELS_AUTOTUNE=0``)."""
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
            flash_attn_varlen_fwd_kernel(
                lambda m: (triton.cdiv(max_seqlen_q, m["BLOCK_M"]), batch, heads),
                _fixed("fwd", q.dtype, dim, INTERPRETED),
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
        # Compiled (or, under the interpreter, decorated) on the first backward pass, not for inference.
        bwd = load_kernels("flash_attn_varlen_bwd")
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
        bwd.flash_attn_varlen_bwd_preprocess[(triton.cdiv(total_q, block_t), heads)](
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
        bwd.flash_attn_varlen_bwd_dkdv_kernel(
            lambda m: (triton.cdiv(max_seqlen_k, m["BLOCK_N"]), batch, kv_heads),
            _fixed("dkdv", q.dtype, dim, bwd.INTERPRETED),
            q, k, v, dout, dk, dv, lse2, delta, cu_seqlens_q, cu_seqlens_k, *common,
            dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
            *tail, _seqlen_bucket(max_seqlen_k), **meta,
        )  # fmt: skip
        bwd.flash_attn_varlen_bwd_dq_kernel(
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
    """Triton varlen attention on inputs validated by :func:`afnext_kernels.functional.flash_attn_varlen`.

    Args:
        q: ``(total_q, heads, dim)``.
        k: ``(total_k, kv_heads, dim)``.
        v: ``(total_k, kv_heads, dim)``.
        cu_seqlens_q: ``(batch + 1,)`` int32 cumulative query lengths.
        cu_seqlens_k: ``(batch + 1,)`` int32 cumulative key lengths.
        max_seqlen_q: Longest query sequence.
        max_seqlen_k: Longest key sequence.
        causal: Causal mask (bottom-right aligned).
        window: ``(left, right)``, ``-1`` unbounded.
        softmax_scale: Score scale.

    Returns:
        ``out`` ``(total_q, heads, dim)`` and natural-log ``lse`` ``(heads, total_q)`` float32.

    Raises:
        KernelUnavailableError: CPU tensors without the Triton interpreter, or a device Triton does not target.
    """
    check_device("flash_attn_varlen", q, sys.modules[__name__])
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
