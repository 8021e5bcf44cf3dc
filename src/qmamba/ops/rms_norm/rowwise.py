"""Residual-add + RMSNorm/LayerNorm and Mamba-2's gated RMSNorm in Triton, forward and backward.

Both work on rows: x (..., d) is viewed as (m, d) (a row stride is allowed, the last dim must be
contiguous) and every statistic is fp32.

``add_norm``, forward grid (cdiv(m, ROWS),): a program loads a (ROWS, BLOCK_N) tile of x (+ residual)
once, writes the new residual (fp32 sum, in its dtype) and y = norm(sum) * weight (+ bias), and keeps
the per-row mean/rstd (m,) for the backward. ROWS > 1 only when d is small; d up to 8192.
Backward grid (programs,) with programs ~ 2 x SMs: each program walks a contiguous range of rows,
recomputes x_hat from the saved residual (or x + residual when that was rounded), writes
dx = d(residual) (the incoming gradient of the new residual added in) and accumulates dweight/dbias
in registers; the (programs, d) partial sums are reduced by one torch sum.

``rms_norm_gated`` (norm over groups of ``group_size`` channels; gate silu(z) before or after the
norm), forward grid (cdiv(m, ROWS), n_groups), rstd saved as (m, n_groups); backward grid
(programs, n_groups) with the same partial-sum scheme for dweight.

Falls back to the reference for d (group_size) > 8192 or a group_size that does not divide d. Inputs
whose last dim is not contiguous after reshaping to (m, d) are copied first.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

from qmamba.ops.rms_norm.naive import add_norm_ref, rms_norm_gated_ref
from qmamba.ops.runtime import pdl

MAX_N = 8192


@triton.jit
def _add_norm_fwd_kernel(
    x_ptr, r_ptr, w_ptr, b_ptr, y_ptr, ro_ptr, mean_ptr, rstd_ptr,
    m, n, sx, sr, sy, sro, eps,
    HAS_RES: tl.constexpr, HAS_BIAS: tl.constexpr, STORE_RES: tl.constexpr, STORE_STATS: tl.constexpr,
    IS_RMS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # (ROWS,)
    cols = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    mc = cols < n
    mask = (rows < m)[:, None] & mc[None, :]
    r64 = rows.to(tl.int64)[:, None]
    tot = tl.load(x_ptr + r64 * sx + cols[None, :], mask=mask, other=0.0).to(tl.float32)  # (ROWS, BLOCK_N)
    if HAS_RES:
        tot += tl.load(r_ptr + r64 * sr + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if STORE_RES:
        tl.store(ro_ptr + r64 * sro + cols[None, :], tot.to(ro_ptr.dtype.element_ty), mask=mask)
    if IS_RMS:
        xc = tot
    else:
        mean = tl.sum(tot, axis=1) / n  # (ROWS,)
        xc = tl.where(mask, tot - mean[:, None], 0.0)
        if STORE_STATS:
            tl.store(mean_ptr + rows, mean, mask=rows < m)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / n + eps)  # (ROWS,)
    if STORE_STATS:
        tl.store(rstd_ptr + rows, rstd, mask=rows < m)
    y = xc * rstd[:, None] * tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        y += tl.load(b_ptr + cols, mask=mc, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + r64 * sy + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _add_norm_bwd_kernel(
    a_ptr, r_ptr, w_ptr, dy_ptr, dro_ptr, dx_ptr, dr_ptr, mean_ptr, rstd_ptr, dw_ptr, db_ptr,
    m, n, rows_per_prog, sa, sr, sdy, sdro, sdx, sdr,
    HAS_R: tl.constexpr, HAS_DRO: tl.constexpr, STORE_DR: tl.constexpr, HAS_BIAS: tl.constexpr,
    IS_RMS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mc = cols < n
    w = tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32)[None, :]  # (1, BLOCK_N)
    dw = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    db = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    start = pid * rows_per_prog
    end = tl.minimum(start + rows_per_prog, m)
    for r0 in range(start, end, ROWS):
        rows = r0 + tl.arange(0, ROWS)  # (ROWS,)
        mr = rows < end
        mask = mr[:, None] & mc[None, :]
        r64 = rows.to(tl.int64)[:, None]
        tot = tl.load(a_ptr + r64 * sa + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_R:  # the saved residual was rounded: recompute the fp32 sum
            tot += tl.load(r_ptr + r64 * sr + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=mr, other=0.0)[:, None]
        if IS_RMS:
            xhat = tot * rstd
        else:
            xhat = tl.where(mask, (tot - tl.load(mean_ptr + rows, mask=mr, other=0.0)[:, None]) * rstd, 0.0)
        dy = tl.load(dy_ptr + r64 * sdy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        wdy = dy * w
        c1 = tl.sum(xhat * wdy, axis=1)[:, None] / n
        if IS_RMS:
            dt = (wdy - xhat * c1) * rstd
        else:
            dt = (wdy - xhat * c1 - tl.sum(wdy, axis=1)[:, None] / n) * rstd
        if HAS_DRO:
            dt += tl.load(dro_ptr + r64 * sdro + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(dx_ptr + r64 * sdx + cols[None, :], dt.to(dx_ptr.dtype.element_ty), mask=mask)
        if STORE_DR:
            tl.store(dr_ptr + r64 * sdr + cols[None, :], dt.to(dr_ptr.dtype.element_ty), mask=mask)
        dw += dy * xhat
        if HAS_BIAS:
            db += dy
    tl.store(dw_ptr + pid * n + cols, tl.sum(dw, axis=0), mask=mc)
    if HAS_BIAS:
        tl.store(db_ptr + pid * n + cols, tl.sum(db, axis=0), mask=mc)


@triton.jit
def _gated_fwd_kernel(
    x_ptr, z_ptr, w_ptr, y_ptr, rstd_ptr, m, n, gs, sx, sz, sy, eps,
    HAS_Z: tl.constexpr, GATE_IN: tl.constexpr, GATE_OUT: tl.constexpr, STORE_STATS: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr,
):
    if PDL:  # ops/runtime/pdl.py: the previous kernel's writes are visible from here on; the next one may launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # (ROWS,)
    g = tl.program_id(1)
    cols = g * gs + tl.arange(0, BLOCK_N)  # (BLOCK_N,) this group's channels
    mc = cols < (g + 1) * gs
    mask = (rows < m)[:, None] & mc[None, :]
    r64 = rows.to(tl.int64)[:, None]
    x = tl.load(x_ptr + r64 * sx + cols[None, :], mask=mask, other=0.0).to(tl.float32)  # (ROWS, BLOCK_N)
    if HAS_Z:
        z = tl.load(z_ptr + r64 * sz + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        gate = z * tl.sigmoid(z)
    if GATE_IN:
        x = x * gate
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / gs + eps)  # (ROWS,)
    if STORE_STATS:
        tl.store(rstd_ptr + rows * tl.num_programs(1) + g, rstd, mask=rows < m)
    y = x * rstd[:, None] * tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32)[None, :]
    if GATE_OUT:
        y = y * gate
    tl.store(y_ptr + r64 * sy + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gated_terms(x_ptr, z_ptr, dy_ptr, r64, cols, mask, sx, sz, sdy, rstd,
                 HAS_Z: tl.constexpr, GATE_IN: tl.constexpr, GATE_OUT: tl.constexpr):
    """x, dy, silu(z), silu'(z), x_hat and d(normed) for a (ROWS, BLOCK_N) tile, fp32."""
    x = tl.load(x_ptr + r64 * sx + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + r64 * sdy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    gate = x
    dgate = x
    if HAS_Z:
        z = tl.load(z_ptr + r64 * sz + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        sig = tl.sigmoid(z)
        gate = z * sig
        dgate = sig * (1.0 + z * (1.0 - sig))  # silu'(z)
    u = x
    if GATE_IN:
        u = x * gate
    xhat = u * rstd
    dn = dy
    if GATE_OUT:
        dn = dy * gate
    return x, dy, gate, dgate, xhat, dn


@triton.jit
def _gated_bwd_kernel(
    x_ptr, z_ptr, w_ptr, dy_ptr, rstd_ptr, dx_ptr, dz_ptr, dw_ptr,
    m, n, gs, rows_per_prog, sx, sz, sdy, sdx, sdz,
    HAS_Z: tl.constexpr, GATE_IN: tl.constexpr, GATE_OUT: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid, g = tl.program_id(0), tl.program_id(1)
    cols = g * gs + tl.arange(0, BLOCK_N)
    mc = cols < (g + 1) * gs
    dw = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    start = pid * rows_per_prog
    end = tl.minimum(start + rows_per_prog, m)
    for r0 in range(start, end, ROWS):
        rows = r0 + tl.arange(0, ROWS)
        mr = rows < end
        mask = mr[:, None] & mc[None, :]
        r64 = rows.to(tl.int64)[:, None]
        rstd = tl.load(rstd_ptr + rows * tl.num_programs(1) + g, mask=mr, other=0.0)[:, None]
        w = tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32)[None, :]  # (1, BLOCK_N), re-read: registers
        # pass 1: the row statistic only (few live values); pass 2 reloads the row (cache hits)
        x, dy, gate, dgate, xhat, dn = _gated_terms(x_ptr, z_ptr, dy_ptr, r64, cols, mask, sx, sz, sdy, rstd,
                                                    HAS_Z, GATE_IN, GATE_OUT)
        c = tl.sum(xhat * dn * w, axis=1)[:, None] / gs  # (ROWS, 1)
        x, dy, gate, dgate, xhat, dn = _gated_terms(x_ptr, z_ptr, dy_ptr, r64, cols, mask, sx, sz, sdy, rstd,
                                                    HAS_Z, GATE_IN, GATE_OUT)
        dw += dn * xhat
        du = (dn * w - xhat * c) * rstd
        if GATE_OUT:
            dz = dy * xhat * w * dgate
        if GATE_IN:
            dz = du * x * dgate
            du = du * gate
        tl.store(dx_ptr + r64 * sdx + cols[None, :], du.to(dx_ptr.dtype.element_ty), mask=mask)
        if HAS_Z:
            tl.store(dz_ptr + r64 * sdz + cols[None, :], dz.to(dz_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + pid * n + cols, tl.sum(dw, axis=0), mask=mc)


def _rows(t: Tensor, n: int) -> Tensor:
    """(..., n) as (m, n) with a contiguous last dim (a view when possible)."""
    t = t.reshape(-1, n)
    return t if t.stride(-1) == 1 else t.contiguous()


def _tile(n: int) -> tuple[int, int, int]:
    """(ROWS, BLOCK_N, num_warps) for rows of n channels: several rows per program when n is small."""
    block_n = triton.next_power_of_2(n)
    rows = max(1, min(16, 1024 // block_n))
    return rows, block_n, min(16, max(4, rows * block_n // 512))


@functools.lru_cache
def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 2


def _n_programs(m: int, rows: int, device: torch.device) -> tuple[int, int]:
    """(programs, rows per program) for the backward: about 2 per SM, each a contiguous range of rows."""
    sms = _sm_count(device)
    progs = max(1, min(triton.cdiv(m, rows), 2 * sms))
    per = triton.cdiv(triton.cdiv(m, progs), rows) * rows
    return triton.cdiv(m, per), per


def _add_norm_fwd(x2, r2, weight, bias, eps, is_rms, res_dtype, store_stats):
    m, n = x2.shape
    rows, block_n, warps = _tile(n)
    y = torch.empty(m, n, device=x2.device, dtype=x2.dtype)
    store_res = r2 is not None or res_dtype != x2.dtype
    ro = torch.empty(m, n, device=x2.device, dtype=res_dtype) if store_res else x2
    mean = torch.empty(m if store_stats and not is_rms else 0, device=x2.device, dtype=torch.float32)
    rstd = torch.empty(m if store_stats else 0, device=x2.device, dtype=torch.float32)
    _add_norm_fwd_kernel[(triton.cdiv(m, rows),)](
        x2, r2 if r2 is not None else x2, weight, bias if bias is not None else weight, y, ro, mean, rstd,
        m, n, x2.stride(0), r2.stride(0) if r2 is not None else 0, y.stride(0), ro.stride(0), eps,
        HAS_RES=r2 is not None, HAS_BIAS=bias is not None, STORE_RES=store_res, STORE_STATS=store_stats,
        IS_RMS=is_rms, ROWS=rows, BLOCK_N=block_n, num_warps=warps,
    )
    return y, ro, mean, rstd


def _add_norm_bwd(a, r, weight, has_bias, mean, rstd, dy, dro, is_rms, x_dtype, r_dtype):
    """a (+ r): the fp32 sum's source; returns dx, dresidual (the same tensor when dtypes agree), dw, db."""
    m, n = a.shape
    rows, block_n, warps = _tile(n)
    progs, per = _n_programs(m, rows, a.device)
    dx = torch.empty(m, n, device=a.device, dtype=x_dtype)
    store_dr = r_dtype is not None and r_dtype != x_dtype
    dr = torch.empty(m, n, device=a.device, dtype=r_dtype) if store_dr else dx
    dw = torch.empty(progs, n, device=a.device, dtype=torch.float32)
    db = torch.empty(progs if has_bias else 0, n, device=a.device, dtype=torch.float32)
    _add_norm_bwd_kernel[(progs,)](
        a, r if r is not None else a, weight, dy, dro if dro is not None else dy, dx, dr, mean, rstd, dw, db,
        m, n, per, a.stride(0), r.stride(0) if r is not None else 0, dy.stride(0),
        dro.stride(0) if dro is not None else 0, dx.stride(0), dr.stride(0),
        HAS_R=r is not None, HAS_DRO=dro is not None, STORE_DR=store_dr, HAS_BIAS=has_bias,
        IS_RMS=is_rms, ROWS=rows, BLOCK_N=block_n, num_warps=warps,
    )
    return dx, (dr if r_dtype is not None else None), dw.sum(0), (db.sum(0) if has_bias else None)


class _AddNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, eps, is_rms, res_dtype, need_grad):
        shape, n = x.shape, x.shape[-1]
        x2 = _rows(x, n)
        r2 = _rows(residual, n) if residual is not None else None
        y, ro, mean, rstd = _add_norm_fwd(x2, r2, weight, bias, eps, is_rms, res_dtype, need_grad)
        exact = ro.dtype == torch.float32 or r2 is None  # else recompute x + residual in fp32
        ctx.save_for_backward(ro if exact else x2, None if exact else r2, weight, bias, mean, rstd)
        ctx.meta = (is_rms, x.dtype, residual.dtype if residual is not None else None, shape)
        res_out = ro.view(shape) if ro is not x2 else x  # no residual and no cast: x is the residual
        return y.view(shape), res_out

    @staticmethod
    def backward(ctx, dy, dro):
        a, r, weight, bias, mean, rstd = ctx.saved_tensors
        is_rms, x_dtype, r_dtype, shape = ctx.meta
        n = shape[-1]
        dro2 = _rows(dro, n) if dro is not None else None
        dx, dr, dw, db = _add_norm_bwd(a, r, weight, bias is not None, mean, rstd, _rows(dy, n), dro2,
                                       is_rms, x_dtype, r_dtype)
        dw = dw.to(weight.dtype)
        db = db.to(bias.dtype) if db is not None else None
        return dx.view(shape), dw, db, (dr.view(shape) if dr is not None else None), None, None, None, None


def add_norm_triton(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
    eps: float = 1e-5,
    is_rms_norm: bool = True,
    residual_in_fp32: bool = False,
) -> tuple[Tensor, Tensor]:
    """Triton ``add_norm_ref``: (norm(x + residual) in x's dtype, x + residual as the new residual).
    With no residual and no dtype change the new residual is x itself (not a copy)."""
    if x.shape[-1] > MAX_N:
        return add_norm_ref(x, weight, bias, residual, eps, is_rms_norm, residual_in_fp32)
    res_dtype = torch.float32 if residual_in_fp32 else (residual.dtype if residual is not None else x.dtype)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias, residual))
    return _AddNormFn.apply(x, weight, bias, residual, eps, is_rms_norm, res_dtype, need_grad)


def _gated_fwd(x2, z2, weight, eps, gs, nbg, store_stats):
    m, n = x2.shape
    rows, block_n, warps = _tile(gs)
    y = torch.empty(m, n, device=x2.device, dtype=x2.dtype)
    rstd = torch.empty(m if store_stats else 0, n // gs, device=x2.device, dtype=torch.float32)
    use_pdl = pdl.enabled(x2.device) and not store_stats  # PDL in the decode step, not in training
    _gated_fwd_kernel[(triton.cdiv(m, rows), n // gs)](
        x2, z2 if z2 is not None else x2, weight, y, rstd, m, n, gs,
        x2.stride(0), z2.stride(0) if z2 is not None else 0, y.stride(0), eps,
        HAS_Z=z2 is not None, GATE_IN=z2 is not None and not nbg, GATE_OUT=z2 is not None and nbg,
        STORE_STATS=store_stats, ROWS=rows, BLOCK_N=block_n, PDL=use_pdl, num_warps=warps,
        **pdl.launch_options(use_pdl),
    )
    return y, rstd


def _gated_bwd(x2, z2, weight, rstd, dy2, gs, nbg):
    m, n = x2.shape
    rows, block_n, warps = _tile(gs)
    progs, per = _n_programs(m, rows, x2.device)
    dx = torch.empty(m, n, device=x2.device, dtype=x2.dtype)
    dz = torch.empty(m, n, device=x2.device, dtype=z2.dtype) if z2 is not None else None
    dw = torch.empty(progs, n, device=x2.device, dtype=torch.float32)
    _gated_bwd_kernel[(progs, n // gs)](
        x2, z2 if z2 is not None else x2, weight, dy2, rstd, dx, dz if dz is not None else dx, dw,
        m, n, gs, per, x2.stride(0), z2.stride(0) if z2 is not None else 0, dy2.stride(0),
        dx.stride(0), dz.stride(0) if dz is not None else 0,
        HAS_Z=z2 is not None, GATE_IN=z2 is not None and not nbg, GATE_OUT=z2 is not None and nbg,
        ROWS=rows, BLOCK_N=block_n, num_warps=warps,
    )
    return dx, dz, dw.sum(0).to(weight.dtype)


class _RMSNormGatedFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, z, eps, gs, nbg, need_grad):
        shape, n = x.shape, x.shape[-1]
        x2 = _rows(x, n)
        z2 = _rows(z, n) if z is not None else None
        y, rstd = _gated_fwd(x2, z2, weight, eps, gs, nbg, need_grad)
        ctx.save_for_backward(x2, z2, weight, rstd)
        ctx.meta = (gs, nbg, shape)
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy):
        x2, z2, weight, rstd = ctx.saved_tensors
        gs, nbg, shape = ctx.meta
        dx, dz, dw = _gated_bwd(x2, z2, weight, rstd, _rows(dy, shape[-1]), gs, nbg)
        return dx.view(shape), dw, (dz.view(shape) if dz is not None else None), None, None, None, None


def rms_norm_gated_triton(
    x: Tensor,
    weight: Tensor,
    z: Tensor | None = None,
    eps: float = 1e-5,
    group_size: int | None = None,
    norm_before_gate: bool = False,
) -> Tensor:
    """Triton ``rms_norm_gated_ref``: RMSNorm per group of ``group_size`` channels, gated by silu(z)."""
    gs = group_size or x.shape[-1]
    if gs > MAX_N or x.shape[-1] % gs != 0:
        return rms_norm_gated_ref(x, weight, z, eps, group_size, norm_before_gate)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, z))
    return _RMSNormGatedFn.apply(x, weight, z, eps, gs, norm_before_gate, need_grad)
