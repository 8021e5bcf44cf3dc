"""Forward kernels of the Triton SSD chunked scan (see ``chunk.py`` for the whole algorithm).

Per head (scalar decay A), chunks of T steps, a_t = dt_t * A, cum_t = a_1 + ... + a_t inside a chunk:

``states_kernel``  grid (b * h, cdiv(n, BLOCK_N)); sequential over the chunks of one head.
    Processes dt (bias, softplus, clamp) and writes dt (b, h, nc * T) and cum (b, h, nc * T), fp32,
    zero past the sequence end. Keeps the state columns S (p, BLOCK_N) in registers and, per chunk,
    writes the chunk's entry state, then
        S = exp(cum_T) * S + sum_t (x_t * dt_t * exp(cum_T - cum_t))^T B_t       # (p x T) @ (T x n)
    States go to (b, nc, h, p, n), the final one to (b, h, p, n), fp32.

``output_kernel``  grid (b * h, nc, T / BLOCK_T); one block of BLOCK_T rows of one chunk, all p.
    y_t = exp(cum_t) C_t S_entry^T                                              # (BT x n) @ (n x p)
        + sum_{s <= t} (C_t . B_s) exp(cum_t - cum_s) dt_s x_s                  # flash-style loop over s blocks
        + D x_t,   out = y * silu(z)   (y before the gate is also written when z is given, for backward)

All matmuls are ``tl.dot`` on operands cast to the inputs' dtype (fp32 accumulation; fp32 inputs use
IEEE fp32 products, not tf32). Batch and chunk offsets are int64 scalars added to the base pointers;
the tile offsets inside a chunk are int32.
"""

from __future__ import annotations

import triton
import triton.language as tl

from qmamba.ops.common.kernel_math import mm


@triton.jit
def _process_dt(raw, bias, lo, hi, mask, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, CLAMP: tl.constexpr):
    """dt -> clamp(softplus(dt + bias)), 0 where ``mask`` is false (steps past the end: no decay, no input)."""
    v = raw.to(tl.float32)
    if HAS_BIAS:
        v += bias
    if SOFTPLUS:
        v = tl.where(v > 20.0, v, tl.log(1.0 + tl.exp(v)))
    if CLAMP:
        v = tl.minimum(tl.maximum(v, lo), hi)
    return tl.where(mask, v, 0.0)


@triton.jit
def states_kernel(
    x, dt, A, B, dt_bias, init, dt_out, cum_out, states, final,
    l, h, p, n, nc, group_ratio, lo, hi,
    x_b, x_l, x_h, x_p, dt_b, dt_l, dt_h, b_b, b_l, b_g, b_n, i_b, i_h, i_p, i_n,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, CLAMP: tl.constexpr, HAS_INIT: tl.constexpr,
    T: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT: tl.constexpr, PREC: tl.constexpr, EMU: tl.constexpr,
):
    pid_bh, pid_n = tl.program_id(0), tl.program_id(1)
    pid_b, pid_h = (pid_bh // h).to(tl.int64), pid_bh % h
    offs_p = tl.arange(0, BLOCK_P)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_pn = (offs_p[:, None] < p) & (offs_n[None, :] < n)  # (BP, BN)
    A_h = tl.load(A + pid_h).to(tl.float32)
    bias = tl.load(dt_bias + pid_h).to(tl.float32) if HAS_BIAS else 0.0
    x += pid_b * x_b + pid_h * x_h
    dt += pid_b * dt_b + pid_h * dt_h
    B += pid_b * b_b + (pid_h // group_ratio) * b_g
    buf = (pid_b * h + pid_h) * nc * T  # row 0 of this head in the (b, h, nc * T) buffers
    st_pn = offs_p[:, None] * n + offs_n[None, :]  # offsets inside one (p, n) state
    if HAS_INIT:
        S = tl.load(init + pid_b * i_b + pid_h * i_h + offs_p[:, None] * i_p + offs_n[None, :] * i_n,
                    mask=mask_pn, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for c in range(nc):
        tl.store(states + ((pid_b * nc + c) * h + pid_h) * p * n + st_pn, S, mask=mask_pn)
        rows_c = c * T + tl.arange(0, T)  # (T,)
        a_all = A_h * _process_dt(tl.load(dt + rows_c.to(tl.int64) * dt_l, mask=rows_c < l, other=0.0),
                                  bias, lo, hi, rows_c < l, HAS_BIAS, SOFTPLUS, CLAMP)
        cum_end = tl.sum(a_all, axis=0)
        run = 0.0
        acc = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
        row0 = pid_b * 0 + c * T  # int64
        x_c, dt_c, B_c = x + row0 * x_l, dt + row0 * dt_l, B + row0 * b_l  # pointers at the chunk's first row
        for k in range(T // BLOCK_T):
            tk = k * BLOCK_T + tl.arange(0, BLOCK_T)  # (BT,) rows inside the chunk
            mask_t = tk < l - c * T
            dtv = _process_dt(tl.load(dt_c + tk * dt_l, mask=mask_t, other=0.0), bias, lo, hi, mask_t,
                              HAS_BIAS, SOFTPLUS, CLAMP)
            cum = run + tl.cumsum(dtv * A_h, axis=0)
            run += tl.sum(dtv * A_h, axis=0)
            first = (tk * 0 + pid_n) == 0  # one program per head writes the dt / cum buffers
            tl.store(dt_out + buf + c * T + tk, dtv, mask=first)
            tl.store(cum_out + buf + c * T + tk, cum, mask=first)
            w = dtv * tl.exp(cum_end - cum)  # (BT,)
            xt = tl.load(x_c + tk[:, None] * x_l + offs_p[None, :] * x_p,
                         mask=mask_t[:, None] & (offs_p[None, :] < p), other=0.0)  # (BT, BP)
            Bt = tl.load(B_c + tk[:, None] * b_l + offs_n[None, :] * b_n,
                         mask=mask_t[:, None] & (offs_n[None, :] < n), other=0.0)  # (BT, BN)
            xw = tl.trans(xt.to(tl.float32) * w[:, None])  # (BP, BT)
            acc += mm(xw, Bt, DOT, PREC, EMU)  # (BP, BN)
            if PREC != "ieee":  # low-precision operands: add xw's rounding error back (keeps the states fp32-exact)
                acc += mm(xw - xw.to(DOT).to(tl.float32), Bt, DOT, PREC, EMU)
        S = tl.exp(cum_end) * S + acc
    tl.store(final + (pid_b * h + pid_h) * p * n + st_pn, S, mask=mask_pn)


@triton.jit
def output_kernel(
    x, B, C, D, z, dt_buf, cum_buf, states, out, out_x,
    l, h, p, n, nc, group_ratio,
    x_b, x_l, x_h, x_p, b_b, b_l, b_g, b_n, c_b, c_l, c_g, c_n, d_h, d_p, z_b, z_l, z_h, z_p,
    o_b, o_l, o_h, o_p,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    T: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT: tl.constexpr, PREC: tl.constexpr, EMU: tl.constexpr,
):
    pid_bh, pid_c, pid_i = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    pid_b, pid_h = (pid_bh // h).to(tl.int64), pid_bh % h
    pid_g = pid_h // group_ratio
    offs_p, offs_n, offs_t = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N), tl.arange(0, BLOCK_T)
    mask_p, mask_n = offs_p < p, offs_n < n
    buf = (pid_b * h + pid_h) * nc * T + pid_c * T  # row 0 of this chunk in the (b, h, nc * T) buffers
    row0 = (pid_c * T).to(tl.int64)
    x += pid_b * x_b + pid_h * x_h + row0 * x_l
    B += pid_b * b_b + pid_g * b_g + row0 * b_l
    ti = pid_i * BLOCK_T + offs_t  # (BT,) rows t of this block, inside the chunk
    mask_t = ti < l - pid_c * T
    cum_t = tl.load(cum_buf + buf + ti)  # (BT,)
    Ct = tl.load(C + pid_b * c_b + pid_g * c_g + row0 * c_l + ti[:, None] * c_l + offs_n[None, :] * c_n,
                 mask=mask_t[:, None] & mask_n[None, :], other=0.0)  # (BT, BN)
    S = tl.load(states + ((pid_b * nc + pid_c) * h + pid_h) * p * n + offs_p[:, None] * n + offs_n[None, :],
                mask=mask_p[:, None] & mask_n[None, :], other=0.0)  # (BP, BN) entry state
    acc = mm(Ct, tl.trans(S), DOT, PREC, EMU) * tl.exp(cum_t)[:, None]  # (BT, BP)
    for j in range(pid_i + 1):
        offs_s = j * BLOCK_T + offs_t
        mask_s = offs_s < l - pid_c * T
        cum_s = tl.load(cum_buf + buf + offs_s)
        dt_s = tl.load(dt_buf + buf + offs_s)
        Bs = tl.load(B + offs_s[:, None] * b_l + offs_n[None, :] * b_n, mask=mask_s[:, None] & mask_n[None, :],
                     other=0.0)  # (BS, BN)
        xs = tl.load(x + offs_s[:, None] * x_l + offs_p[None, :] * x_p, mask=mask_s[:, None] & mask_p[None, :],
                     other=0.0)  # (BS, BP)
        causal = ti[:, None] >= offs_s[None, :]  # (BT, BS)
        decay = tl.exp(tl.where(causal, cum_t[:, None] - cum_s[None, :], float("-inf")))
        w = mm(Ct, tl.trans(Bs), DOT, PREC, EMU) * decay * dt_s[None, :]  # (BT, BS)
        acc += mm(w, xs, DOT, PREC, EMU)  # (BT, BP)
    mask = mask_t[:, None] & mask_p[None, :]
    if HAS_D:
        xt = tl.load(x + ti[:, None] * x_l + offs_p[None, :] * x_p, mask=mask, other=0.0).to(tl.float32)
        acc += xt * tl.load(D + pid_h * d_h + offs_p * d_p, mask=mask_p, other=0.0).to(tl.float32)[None, :]
    o_off = pid_b * o_b + pid_h * o_h + row0 * o_l + ti[:, None] * o_l + offs_p[None, :] * o_p
    if HAS_Z:
        tl.store(out_x + o_off, acc.to(out_x.dtype.element_ty), mask=mask)
        zt = tl.load(z + pid_b * z_b + pid_h * z_h + row0 * z_l + ti[:, None] * z_l + offs_p[None, :] * z_p,
                     mask=mask, other=0.0).to(tl.float32)
        acc *= zt * tl.sigmoid(zt)
    tl.store(out + o_off, acc.to(out.dtype.element_ty), mask=mask)
