"""Triton backward kernels of variable-length flash attention.

FlashAttention-2's backward (Dao, arXiv 2307.08691, Algorithm 2) without atomics, split as in Triton's
fused-attention tutorial: ``delta = rowsum(dO * O)`` first, then one kernel that owns a block of keys of one
key/value head and walks the queries that see it (every query head of its group, so grouped-query attention
needs no reduction afterwards) to accumulate ``dK`` and ``dV``, and one kernel that owns a block of queries and
walks its keys to accumulate ``dQ``. Probabilities are recomputed from the saved base-2 log-sum-exp:
``P = exp2(q.k * scale * log2(e) - lse2)``, ``dS = P * (dP - delta)``, ``dQ = scale * dS K``,
``dK = scale * dS^T Q``, ``dV = P^T dO``. As in the forward kernel, blocks are walked in three stages
(masked edge, unmasked middle, masked edge) and the loops call no other ``@triton.jit`` function.

The launch code and the autograd Function are in :mod:`afnext_kernels.ops.flash_attn_varlen`, which loads this
module on the first backward pass (forward and backward kernels together would pass 600 lines in one file).
"""

from __future__ import annotations

import triton
import triton.language as tl

from afnext_kernels._triton import TunableKernel, interpreter_active
from afnext_kernels.ops.flash_attn_varlen import _band_range

INTERPRETED = interpreter_active()

__all__ = [
    "INTERPRETED",
    "flash_attn_varlen_bwd_dkdv_kernel",
    "flash_attn_varlen_bwd_dq_kernel",
    "flash_attn_varlen_bwd_preprocess",
]


@triton.jit
def _flash_attn_varlen_bwd_preprocess_kernel(
    OUT, DO, DELTA, stride_ot, stride_oh, stride_dot, stride_doh, total_q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    """``delta[h, t] = sum_d O[t, h, d] * dO[t, h, d]`` in float32; grid ``(cdiv(total_q, BLOCK_T), heads)``."""
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    head = tl.program_id(1).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (rows[:, None] < total_q) & (offs_d[None, :] < HEAD_DIM)
    rows64 = rows.to(tl.int64)
    o = tl.load(
        OUT + rows64[:, None] * stride_ot + head * stride_oh + offs_d[None, :], mask=mask, other=0.0
    )
    do = tl.load(
        DO + rows64[:, None] * stride_dot + head * stride_doh + offs_d[None, :],
        mask=mask,
        other=0.0,
    )
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + head * total_q + rows, delta, mask=rows < total_q)


@triton.jit
def _flash_attn_varlen_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA,
    cu_seqlens_q, cu_seqlens_k,
    qk_scale, sm_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dkt, stride_dkh, stride_dvt, stride_dvh,
    total_q, window_left, window_right, seqlen_bucket,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid ``(cdiv(max_seqlen_k, BLOCK_N), batch, kv_heads)``: ``dK``, ``dV`` of one key block."""
    pid_n = tl.program_id(0)
    seq = tl.program_id(1)
    kv_head = tl.program_id(2)
    k_start = tl.load(cu_seqlens_k + seq)
    len_k = tl.load(cu_seqlens_k + seq + 1) - k_start
    start_n = pid_n * BLOCK_N
    if start_n >= len_k:
        return
    q_start = tl.load(cu_seqlens_q + seq)
    len_q = tl.load(cu_seqlens_q + seq + 1) - q_start
    off = len_k - len_q

    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    cols = start_n + offs_n
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    kv_mask = (cols[:, None] < len_k) & d_ok[None, :]
    # 64-bit scalar bases, 32-bit offsets inside a block (see the forward kernel).
    key0 = (k_start + start_n).to(tl.int64)
    k_base = K + key0 * stride_kt + kv_head.to(tl.int64) * stride_kh
    v_base = V + key0 * stride_vt + kv_head.to(tl.int64) * stride_vh
    k = tl.load(k_base + offs_n[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    # Query blocks that see some key of this block, and those whose queries all see all of them (no mask):
    # query i sees key j iff j - off - right <= i <= j - off + left.
    last_n = tl.minimum(start_n + BLOCK_N, len_k) - 1
    lo, full_lo, full_hi, hi = _band_range(
        start_n, last_n, -off, len_q, window_right, window_left, HAS_RIGHT, HAS_LEFT, BLOCK_M
    )

    for g in range(GROUP):
        head = kv_head * GROUP + g
        q_base = Q + q_start.to(tl.int64) * stride_qt + head.to(tl.int64) * stride_qh
        do_base = DO + q_start.to(tl.int64) * stride_dot + head.to(tl.int64) * stride_doh
        lse_base = LSE + head.to(tl.int64) * total_q + q_start
        delta_base = DELTA + head.to(tl.int64) * total_q + q_start
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
            for start_m in range(stage_lo, stage_hi, BLOCK_M):
                start_m = tl.multiple_of(start_m, BLOCK_M)
                rows = start_m + offs_m
                start_m64 = start_m.to(tl.int64)
                # (BLOCK_D, BLOCK_M) and (BLOCK_M, BLOCK_D)
                qt_ptrs = (q_base + start_m64 * stride_qt) + (
                    offs_m[None, :] * stride_qt + offs_d[:, None]
                )
                do_ptrs = (do_base + start_m64 * stride_dot) + (
                    offs_m[:, None] * stride_dot + offs_d[None, :]
                )
                if stage == 1:
                    if BLOCK_D == HEAD_DIM:
                        qt = tl.load(qt_ptrs)
                        do = tl.load(do_ptrs)
                    else:
                        qt = tl.load(qt_ptrs, mask=d_ok[:, None], other=0.0)
                        do = tl.load(do_ptrs, mask=d_ok[None, :], other=0.0)
                    lse = tl.load(lse_base + rows)
                    delta = tl.load(delta_base + rows)
                else:
                    row_ok = rows < len_q
                    qt = tl.load(qt_ptrs, mask=row_ok[None, :] & d_ok[:, None], other=0.0)
                    do = tl.load(do_ptrs, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
                    lse = tl.load(lse_base + rows, mask=row_ok, other=0.0)
                    delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
                qkt = tl.dot(k, qt, input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_M)
                pt = tl.math.exp2(qkt * qk_scale - lse[None, :])
                if stage != 1:
                    # The forward band mask, transposed (keys x queries); also drops rows past the sequence.
                    keep = (cols[:, None] < len_k) & (rows[None, :] < len_q)
                    if HAS_LEFT:
                        keep = keep & (cols[:, None] >= rows[None, :] + off - window_left)
                    if HAS_RIGHT:
                        keep = keep & (cols[:, None] <= rows[None, :] + off + window_right)
                    pt = tl.where(keep, pt, 0.0)
                dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
                dpt = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)  # (BLOCK_N, BLOCK_M)
                dst = pt * (dpt - delta[None, :])
                dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=DOT_PRECISION)

    dk = dk * sm_scale
    dk_base = DK + key0 * stride_dkt + kv_head.to(tl.int64) * stride_dkh
    dv_base = DV + key0 * stride_dvt + kv_head.to(tl.int64) * stride_dvh
    tl.store(
        dk_base + offs_n[:, None] * stride_dkt + offs_d[None, :],
        dk.to(DK.dtype.element_ty),
        mask=kv_mask,
    )
    tl.store(
        dv_base + offs_n[:, None] * stride_dvt + offs_d[None, :],
        dv.to(DV.dtype.element_ty),
        mask=kv_mask,
    )


@triton.jit
def _flash_attn_varlen_bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA,
    cu_seqlens_q, cu_seqlens_k,
    qk_scale, sm_scale,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
    stride_dqt, stride_dqh,
    total_q, window_left, window_right, seqlen_bucket,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_LEFT: tl.constexpr, HAS_RIGHT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Grid ``(cdiv(max_seqlen_q, BLOCK_M), batch, heads)``: ``dQ`` of one query block."""
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
    off = len_k - len_q
    kv_head = head // GROUP

    offs_m = tl.arange(0, BLOCK_M)
    rows = start_m + offs_m
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_ok = rows < len_q
    q_mask = row_ok[:, None] & d_ok[None, :]
    # 64-bit scalar bases, 32-bit offsets inside a block (see the forward kernel).
    query0 = (q_start + start_m).to(tl.int64)
    q_base = Q + query0 * stride_qt + head.to(tl.int64) * stride_qh
    do_base = DO + query0 * stride_dot + head.to(tl.int64) * stride_doh
    k_base = K + k_start.to(tl.int64) * stride_kt + kv_head.to(tl.int64) * stride_kh
    v_base = V + k_start.to(tl.int64) * stride_vt + kv_head.to(tl.int64) * stride_vh
    q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :], mask=q_mask, other=0.0)
    do = tl.load(do_base + offs_m[:, None] * stride_dot + offs_d[None, :], mask=q_mask, other=0.0)
    lse = tl.load(LSE + head.to(tl.int64) * total_q + q_start + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + head.to(tl.int64) * total_q + q_start + rows, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

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
            # both (BLOCK_D, BLOCK_N)
            kt_ptrs = (k_base + start_n64 * stride_kt) + (
                offs_n[None, :] * stride_kt + offs_d[:, None]
            )
            vt_ptrs = (v_base + start_n64 * stride_vt) + (
                offs_n[None, :] * stride_vt + offs_d[:, None]
            )
            if stage == 1:
                if BLOCK_D == HEAD_DIM:
                    kt = tl.load(kt_ptrs)
                    vt = tl.load(vt_ptrs)
                else:
                    kt = tl.load(kt_ptrs, mask=d_ok[:, None], other=0.0)
                    vt = tl.load(vt_ptrs, mask=d_ok[:, None], other=0.0)
            else:
                kv_mask = (cols[None, :] < len_k) & d_ok[:, None]
                kt = tl.load(kt_ptrs, mask=kv_mask, other=0.0)
                vt = tl.load(vt_ptrs, mask=kv_mask, other=0.0)
            qk = tl.dot(q, kt, input_precision=DOT_PRECISION)  # (BLOCK_M, BLOCK_N)
            p = tl.math.exp2(qk * qk_scale - lse[:, None])
            if stage != 1:
                keep = cols[None, :] < len_k
                if HAS_LEFT:
                    keep = keep & (cols[None, :] >= rows[:, None] + off - window_left)
                if HAS_RIGHT:
                    keep = keep & (cols[None, :] <= rows[:, None] + off + window_right)
                p = tl.where(keep, p, 0.0)
            dp = tl.dot(do, vt, input_precision=DOT_PRECISION)
            ds = p * (dp - delta[:, None])
            dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=DOT_PRECISION)

    dq = dq * sm_scale
    dq_base = DQ + query0 * stride_dqt + head.to(tl.int64) * stride_dqh
    tl.store(
        dq_base + offs_m[:, None] * stride_dqt + offs_d[None, :],
        dq.to(DQ.dtype.element_ty),
        mask=q_mask,
    )


def _configs(shapes: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in shapes
    ]


# dK/dV keep two (BLOCK_N, dim) float32 accumulators in registers, so the key block is the large one and
# query blocks are short (the tutorial's BLOCK_M1=32, BLOCK_N1=128); dQ is the mirror image.
flash_attn_varlen_bwd_dkdv_kernel = TunableKernel(
    _flash_attn_varlen_bwd_dkdv_kernel,
    _configs([(32, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 4), (64, 128, 8, 2), (16, 64, 4, 4)]),
    key=["HEAD_DIM", "GROUP", "HAS_LEFT", "HAS_RIGHT", "seqlen_bucket"],
    interpreted=INTERPRETED,
)
flash_attn_varlen_bwd_dq_kernel = TunableKernel(
    _flash_attn_varlen_bwd_dq_kernel,
    _configs([(128, 32, 8, 3), (64, 64, 4, 3), (64, 32, 4, 4), (128, 64, 8, 2), (64, 16, 4, 4)]),
    key=["HEAD_DIM", "HAS_LEFT", "HAS_RIGHT", "seqlen_bucket"],
    interpreted=INTERPRETED,
)
flash_attn_varlen_bwd_preprocess = _flash_attn_varlen_bwd_preprocess_kernel
