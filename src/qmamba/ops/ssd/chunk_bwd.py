"""Backward kernels of the Triton SSD chunked scan (see ``chunk.py`` for the whole algorithm).

dy = dout * silu(z) is the gradient of the pre-gate output; S_c the entry state of chunk c (recomputed
by the forward ``states_kernel``), dS_c the gradient of chunk c's exit state.

``dstates_kernel``  grid (b * h, cdiv(n, BLOCK_N)); sequential over the chunks, last to first:
    dS_c is written (b, nc, h, p, n) fp32, then dS_{c-1} = exp(cum_T) dS_c + sum_t exp(cum_t) dy_t^T C_t.
    What is left at the end is d(initial_states). Also writes the partial sums <dS_c, S_{c+1}> (the
    decay-of-the-chunk term of d cum_T) to (b, h, nc, n_blocks).

``chunk_bwd_kernel``  grid (b * h, nc, T / BLOCK_T); rows i of one chunk, all p and n. With
    w(t, s) = exp(cum_t - cum_s) for s <= t inside the chunk:
        dxdt_s = sum_{t>=s} (C_t . B_s) w dy_t + exp(cum_T - cum_s) dS B_s     (loop over t blocks >= i)
        dB_s   = sum_{t>=s} (dy_t . xdt_s) w C_t + exp(cum_T - cum_s) xdt_s dS (same loop)
        dC_t   = sum_{s<=t} (dy_t . xdt_s) w B_s + exp(cum_t) dy_t S             (loop over s blocks <= i)
    and dx = dxdt dt + D dy, d(dt) through xdt = <dxdt, x>, dD, dz, and per row
        d cum_t = C_t . dC_t - B_t . dB_t      (row sums minus column sums of the decayed products)
    dB and dC are written per head (b, l, h, n) fp32 and summed over the heads of a group outside.

``ddt_kernel``  grid (b * h, nc): d a_t = sum_{t' >= t} d cum_t' + <dS_c, S_{c+1}>, then
    d dt = d(dt from xdt) + A d a, dA = sum d a dt, and back through clamp, softplus and dt_bias.
"""

from __future__ import annotations

import triton
import triton.language as tl

from qmamba.ops.common.kernel_math import mm


@triton.jit
def _load_dy(dout, z, off, mask, HAS_Z: tl.constexpr):
    """dout (and z) at ``off`` -> dy = dout * silu(z) in fp32."""
    dy = tl.load(dout + off, mask=mask, other=0.0).to(tl.float32)
    if HAS_Z:
        zt = tl.load(z + off, mask=mask, other=0.0).to(tl.float32)
        dy *= zt * tl.sigmoid(zt)
    return dy


@triton.jit
def dstates_kernel(
    dout, z, C, cum_buf, states, final, dfinal, dstates, dinit, last_term,
    l, h, p, n, nc, group_ratio,
    o_b, o_l, o_h, o_p, c_b, c_l, c_g, c_n,
    HAS_Z: tl.constexpr, HAS_DFINAL: tl.constexpr,
    T: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT: tl.constexpr, PREC: tl.constexpr, EMU: tl.constexpr,
):
    pid_bh, pid_n = tl.program_id(0), tl.program_id(1)
    pid_b, pid_h = (pid_bh // h).to(tl.int64), pid_bh % h
    offs_p = tl.arange(0, BLOCK_P)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_p, mask_n = offs_p < p, offs_n < n
    mask_pn = mask_p[:, None] & mask_n[None, :]
    st_pn = offs_p[:, None] * n + offs_n[None, :]
    head_off = (pid_b * h + pid_h) * p * n
    if HAS_DFINAL:
        dS = tl.load(dfinal + head_off + st_pn, mask=mask_pn, other=0.0)
    else:
        dS = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    S_next = tl.load(final + head_off + st_pn, mask=mask_pn, other=0.0)
    buf = (pid_b * h + pid_h) * nc * T
    dout += pid_b * o_b + pid_h * o_h
    z += pid_b * o_b + pid_h * o_h
    C += pid_b * c_b + (pid_h // group_ratio) * c_g
    nnb = tl.num_programs(1)
    for cc in range(nc):
        c = nc - 1 - cc
        st_off = ((pid_b * nc + c) * h + pid_h) * p * n
        tl.store(dstates + st_off + st_pn, dS, mask=mask_pn)
        tl.store(last_term + ((pid_b * h + pid_h) * nc + c) * nnb + pid_n, tl.sum(tl.sum(dS * S_next, 1), 0))
        S_next = tl.load(states + st_off + st_pn, mask=mask_pn, other=0.0)
        acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
        row0 = pid_b * 0 + c * T  # int64
        dout_c, z_c, C_c = dout + row0 * o_l, z + row0 * o_l, C + row0 * c_l  # at the chunk's first row
        for k in range(T // BLOCK_T):
            tk = k * BLOCK_T + tl.arange(0, BLOCK_T)  # (BT,) rows inside the chunk
            mask_t = tk < l - c * T
            cum = tl.load(cum_buf + buf + c * T + tk)
            dy = _load_dy(dout_c, z_c, tk[:, None] * o_l + offs_p[None, :] * o_p, mask_t[:, None] & mask_p[None, :],
                          HAS_Z)  # (BT, BP)
            Ct = tl.load(C_c + tk[:, None] * c_l + offs_n[None, :] * c_n, mask=mask_t[:, None] & mask_n[None, :],
                         other=0.0)  # (BT, BN)
            acc += mm(tl.trans(dy * tl.exp(cum)[:, None]), Ct, DOT, PREC, EMU)  # (BP, BN)
        dS = tl.exp(tl.load(cum_buf + buf + c * T + T - 1)) * dS + acc
    tl.store(dinit + head_off + st_pn, dS, mask=mask_pn)


@triton.jit
def _later_block(j, ti, cum_i, dt_i, B_i, x_i, dxdt, dB_i, d_cum, cum_c, C_c, dout_c, z_c, l_c,
                 c_l, c_n, o_l, o_p, p, n, HAS_Z: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr,
                 BLOCK_N: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, EMU: tl.constexpr):
    """Rows i as s, block j as t >= s: dx dt and dB from the outputs of later steps; -column sums to d cum."""
    offs_p, offs_n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    tj = j * BLOCK_T + tl.arange(0, BLOCK_T)
    t64, mask_j = tj, tj < l_c
    cum_j = tl.load(cum_c + tj)
    C_j = tl.load(C_c + t64[:, None] * c_l + offs_n[None, :] * c_n, mask=mask_j[:, None] & (offs_n < n)[None, :],
                  other=0.0)  # (BT, BN)
    dy_j = _load_dy(dout_c, z_c, t64[:, None] * o_l + offs_p[None, :] * o_p,
                    mask_j[:, None] & (offs_p < p)[None, :], HAS_Z)  # (BT, BP)
    decay = tl.exp(tl.where(tj[None, :] >= ti[:, None], cum_j[None, :] - cum_i[:, None], float("-inf")))
    cb = mm(B_i, tl.trans(C_j), DOT, PREC, EMU) * decay  # (BS, BT)
    g = mm(x_i, tl.trans(dy_j), DOT, PREC, EMU) * dt_i[:, None]  # (BS, BT): x dt after the product
    d_cum -= tl.sum(tl.where(tj[None, :] > ti[:, None], cb * g, 0.0), 1)
    dxdt += mm(cb, dy_j, DOT, PREC, EMU)  # (BS, BP)
    dB_i += mm(g * decay, C_j, DOT, PREC, EMU)  # (BS, BN)
    return dxdt, dB_i, d_cum


@triton.jit
def _earlier_block(j, ti, cum_i, C_i, dy_i, dC_i, d_cum, cum_c, dt_c, B_c, x_c, l_c,
                   b_l, b_n, x_l, x_p, p, n, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
                   DOT: tl.constexpr, PREC: tl.constexpr, EMU: tl.constexpr):
    """Rows i as t, block j as s <= t: dC from the inputs of earlier steps; row sums to d cum."""
    offs_p, offs_n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    sj = j * BLOCK_T + tl.arange(0, BLOCK_T)
    s64, mask_j = sj, sj < l_c
    cum_j = tl.load(cum_c + sj)
    dt_j = tl.load(dt_c + sj)
    B_j = tl.load(B_c + s64[:, None] * b_l + offs_n[None, :] * b_n, mask=mask_j[:, None] & (offs_n < n)[None, :],
                  other=0.0)  # (BS, BN)
    x_j = tl.load(x_c + s64[:, None] * x_l + offs_p[None, :] * x_p, mask=mask_j[:, None] & (offs_p < p)[None, :],
                  other=0.0)  # (BS, BP)
    decay = tl.exp(tl.where(ti[:, None] >= sj[None, :], cum_i[:, None] - cum_j[None, :], float("-inf")))
    g = mm(dy_i, tl.trans(x_j), DOT, PREC, EMU) * (decay * dt_j[None, :])  # (BT, BS)
    cb = mm(C_i, tl.trans(B_j), DOT, PREC, EMU)  # (BT, BS)
    d_cum += tl.sum(tl.where(ti[:, None] > sj[None, :], cb * g, 0.0), 1)
    dC_i += mm(g, B_j, DOT, PREC, EMU)  # (BT, BN)
    return dC_i, d_cum



@triton.jit
def _dC_rows(x_c, B_c, C_c, dout_c, z_c, cum_c, dt_c, states, dC, ti, l_c, pid_i,
             b_l, b_n, c_l, c_n, x_l, x_p, o_l, o_p, dc_l, p, n,
             HAS_Z: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
             DOT: tl.constexpr, PREC: tl.constexpr, EMU: tl.constexpr):
    """dC of rows i (written to dC, already offset to them); returns their d cum terms that involve C."""
    offs_p, offs_n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    t64, mask_i = ti, ti < l_c
    cum_i = tl.load(cum_c + ti)
    C_i = tl.load(C_c + t64[:, None] * c_l + offs_n[None, :] * c_n, mask=mask_i[:, None] & (offs_n < n)[None, :],
                  other=0.0)  # (BT, BN)
    dy_i = _load_dy(dout_c, z_c, t64[:, None] * o_l + offs_p[None, :] * o_p,
                    mask_i[:, None] & (offs_p < p)[None, :], HAS_Z).to(DOT)  # (BT, BP)
    S = tl.load(states + offs_p[:, None] * n + offs_n[None, :], mask=(offs_p < p)[:, None] & (offs_n < n)[None, :],
                other=0.0)  # (BP, BN) entry state
    dC_i = mm(dy_i, S, DOT, PREC, EMU)  # (BT, BN)
    if PREC != "ieee":  # low-precision operands: add S's rounding error back (this term cancels in d cum)
        dC_i += mm(dy_i, S - S.to(DOT).to(tl.float32), DOT, PREC, EMU)
    dC_i *= tl.exp(cum_i)[:, None]
    d_cum = tl.sum(C_i.to(tl.float32) * dC_i, 1)
    for j in range(pid_i + 1):  # s blocks at or before the rows i (as t)
        dC_i, d_cum = _earlier_block(j, ti, cum_i, C_i, dy_i, dC_i, d_cum, cum_c, dt_c, B_c, x_c, l_c,
                                     b_l, b_n, x_l, x_p, p, n, BLOCK_T, BLOCK_P, BLOCK_N, DOT, PREC, EMU)
    tl.store(dC + (ti - pid_i * BLOCK_T)[:, None] * dc_l + offs_n[None, :], dC_i,
             mask=mask_i[:, None] & (offs_n < n)[None, :])
    return d_cum


@triton.jit
def chunk_bwd_kernel(
    x, B, C, D, z, dout, out_x, dt_buf, cum_buf, states, dstates,
    dx, dz, dB, dC, ddt_x, dcum, dD,
    l, h, p, n, nc, group_ratio,
    x_b, x_l, x_h, x_p, b_b, b_l, b_g, b_n, c_b, c_l, c_g, c_n, o_b, o_l, o_h, o_p, d_h, d_p,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    T: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT: tl.constexpr, PREC: tl.constexpr, EMU: tl.constexpr,
):
    pid_bh, pid_c, pid_i = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    pid_b, pid_h = (pid_bh // h).to(tl.int64), pid_bh % h
    pid_g = pid_h // group_ratio
    offs_p, offs_n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    mask_p, mask_n = offs_p < p, offs_n < n
    row0 = (pid_c * T).to(tl.int64)  # first row of the chunk; pointers below start there
    x += pid_b * x_b + pid_h * x_h + row0 * x_l
    B += pid_b * b_b + pid_g * b_g + row0 * b_l
    C += pid_b * c_b + pid_g * c_g + row0 * c_l
    dout += pid_b * o_b + pid_h * o_h + row0 * o_l
    z += pid_b * o_b + pid_h * o_h + row0 * o_l
    buf = (pid_b * h + pid_h) * nc * T + pid_c * T  # row 0 of this chunk in the (b, h, nc * T) buffers
    st_off = ((pid_b * nc + pid_c) * h + pid_h) * p * n
    ti = pid_i * BLOCK_T + tl.arange(0, BLOCK_T)  # (BT,) rows of this block, inside the chunk
    t64, l_c = ti, l - pid_c * T
    m_ip, m_in = (ti < l_c)[:, None] & mask_p[None, :], (ti < l_c)[:, None] & mask_n[None, :]
    hn = ((pid_b * l + row0 + pid_i * BLOCK_T) * h + pid_h) * n  # rows i in the (b, l, h, n) per-head buffers
    d_cum = _dC_rows(x, B, C, dout, z, cum_buf + buf, dt_buf + buf, states + st_off, dC + hn, ti, l_c, pid_i,
                     b_l, b_n, c_l, c_n, x_l, x_p, o_l, o_p, h * n, p, n,
                     HAS_Z, BLOCK_T, BLOCK_P, BLOCK_N, DOT, PREC, EMU)

    cum_i, dt_i = tl.load(cum_buf + buf + ti), tl.load(dt_buf + buf + ti)
    B_i = tl.load(B + t64[:, None] * b_l + offs_n[None, :] * b_n, mask=m_in, other=0.0)  # (BT, BN)
    x_i = tl.load(x + t64[:, None] * x_l + offs_p[None, :] * x_p, mask=m_ip, other=0.0)  # (BT, BP)
    dS = tl.load(dstates + st_off + offs_p[:, None] * n + offs_n[None, :], mask=mask_p[:, None] & mask_n[None, :],
                 other=0.0)  # (BP, BN)
    w_end = tl.exp(tl.load(cum_buf + buf + T - 1) - cum_i)[:, None]
    dxdt = mm(B_i, tl.trans(dS), DOT, PREC, EMU)  # (BT, BP)
    if PREC != "ieee":  # low-precision operands: add dS's rounding error back, this term cancels in d cum
        dxdt += mm(B_i, tl.trans(dS - dS.to(DOT).to(tl.float32)), DOT, PREC, EMU)
    dxdt *= w_end
    d_cum -= tl.sum(x_i.to(tl.float32) * dt_i[:, None] * dxdt, 1)
    dB_i = mm(x_i, dS, DOT, PREC, EMU) * (dt_i[:, None] * w_end)  # (BT, BN)
    for j in range(pid_i, T // BLOCK_T):  # t blocks at or after the rows i (as s)
        dxdt, dB_i, d_cum = _later_block(
            j, ti, cum_i, dt_i, B_i, x_i, dxdt, dB_i, d_cum, cum_buf + buf, C, dout, z, l_c,
            c_l, c_n, o_l, o_p, p, n, HAS_Z, BLOCK_T, BLOCK_P, BLOCK_N, DOT, PREC, EMU)
    tl.store(dB + hn + (ti - pid_i * BLOCK_T)[:, None] * (h * n) + offs_n[None, :], dB_i, mask=m_in)
    tl.store(dcum + buf + ti, d_cum)
    x_i = x_i.to(tl.float32)
    tl.store(ddt_x + buf + ti, tl.sum(dxdt * x_i, 1))
    dx_i = dxdt * dt_i[:, None]
    oo = t64[:, None] * o_l + offs_p[None, :] * o_p  # dx, dz, out_x share dout's strides
    base = pid_b * o_b + pid_h * o_h + row0 * o_l
    dy_i = _load_dy(dout, z, oo, m_ip, HAS_Z)
    if HAS_D:
        dx_i += dy_i * tl.load(D + pid_h * d_h + offs_p * d_p, mask=mask_p, other=0.0).to(tl.float32)[None, :]
        tl.store(dD + (((pid_b * nc + pid_c) * tl.num_programs(2) + pid_i) * h + pid_h) * BLOCK_P + offs_p,
                 tl.sum(dy_i * x_i, 0))
    tl.store(dx + base + oo, dx_i.to(dx.dtype.element_ty), mask=m_ip)
    if HAS_Z:
        _store_dz(dout + oo, z + oo, out_x + base + oo, dz + base + oo, m_ip)


@triton.jit
def _store_dz(dout_ptrs, z_ptrs, out_x_ptrs, dz_ptrs, mask):
    """dz = dout * y * silu'(z), y the output before the gate."""
    do = tl.load(dout_ptrs, mask=mask, other=0.0).to(tl.float32)
    zt = tl.load(z_ptrs, mask=mask, other=0.0).to(tl.float32)
    yx = tl.load(out_x_ptrs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(zt)
    tl.store(dz_ptrs, (do * yx * sig * (1.0 + zt * (1.0 - sig))).to(dz_ptrs.dtype.element_ty), mask=mask)


@triton.jit
def ddt_kernel(
    dt, A, dt_bias, dt_buf, ddt_x, dcum, last_term, ddt, dA_part, dbias_part,
    l, h, nc, nnb, lo, hi,
    dt_b, dt_l, dt_h, g_b, g_l, g_h,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, CLAMP: tl.constexpr, T: tl.constexpr,
):
    pid_bh, pid_c = tl.program_id(0), tl.program_id(1)
    pid_b, pid_h = (pid_bh // h).to(tl.int64), pid_bh % h
    t = tl.arange(0, T)
    rows = pid_c * T + t
    r64, mask = rows.to(tl.int64), rows < l
    head = (pid_b * h + pid_h) * nc
    buf = head * T + rows
    d_cum = tl.load(dcum + buf)
    tail = 0.0
    for k in range(nnb):
        tail += tl.load(last_term + (head + pid_c) * nnb + k)
    da = tl.cumsum(d_cum, 0, reverse=True) + tail  # sum over t' >= t
    dtp = tl.load(dt_buf + buf)
    ddt_p = tl.load(ddt_x + buf) + da * tl.load(A + pid_h).to(tl.float32)
    tl.store(dA_part + head + pid_c, tl.sum(da * dtp, 0))
    v = tl.load(dt + pid_b * dt_b + pid_h * dt_h + r64 * dt_l, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v += tl.load(dt_bias + pid_h).to(tl.float32)
    g = ddt_p
    if SOFTPLUS:
        g *= tl.where(v > 20.0, 1.0, tl.sigmoid(v))
        v = tl.where(v > 20.0, v, tl.log(1.0 + tl.exp(v)))
    if CLAMP:
        g = tl.where((v >= lo) & (v <= hi), g, 0.0)
    g = tl.where(mask, g, 0.0)
    tl.store(ddt + pid_b * g_b + pid_h * g_h + r64 * g_l, g.to(ddt.dtype.element_ty), mask=mask)
    tl.store(dbias_part + head + pid_c, tl.sum(g, 0))
