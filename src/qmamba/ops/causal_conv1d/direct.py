"""Causal depthwise conv1d in Triton: sequence forward and backward, and the one-step decode update.

Shapes: x (b, d, l) with any strides, weight (d, w) with 2 <= w <= 4, bias (d,), initial_states
(b, d, w-1). Mamba passes x as a channel-last view ((b, l, d).transpose(1, 2), stride(1) == 1); the
kernels take every stride as an argument (Triton specialises a stride of 1, so the tile is coalesced
along whichever of d and l is contiguous) and never copy x. Outputs (y, dx) take x's layout.

The sequence kernels always run 4 taps: a weight with w < 4 is zero-padded on the left (a (d, 4)
copy), which leaves y unchanged; initial_states keeps its w-1 columns (cast to x's dtype as the
reference does). Tiles are (BD, BL) = (64, 16) for channel-last x, (16, 64) otherwise, so that a
thread holds few elements (the backward keeps 11 shifted tiles in flight). Only the first tile along
l reads initial_states, as three column vectors placed by a select; the kernels branch on it so the
other tiles run the lighter code.

Forward, grid (cdiv(l, BL), cdiv(d, BD), b): a program computes the tile
``y[:, t] = act(bias + sum_j weight[:, j] * xp[:, t - 3 + j])`` from 4 shifted loads of x (the
overlap hits the cache, DRAM sees x once). The last tile along l also writes the final states.

Backward, one pass over x and dy, grid (cdiv(l + w-1, BL * 4), cdiv(d, BD), b): a program walks 4
tiles along l. Tiles start at t = -(w-1), so the same code gives dinitial_states (t < 0) and dx:
``dx[t] = sum_s weight[3-s] * g[t+s]`` with g = dy * act'(pre); pre at t..t+3 is recomputed from the
7 shifted x tiles xp[t-3 .. t+3], each loaded once. dweight and dbias: each program sums its 4 tiles
in registers and stores them into (programs, 5, d) fp32, reduced by one torch sum (no atomics).
The gradient of returned final states is added straight into dx / dinitial_states.

Update, grid (cdiv(d, BD), b): rolls conv_state (b, d, w) in place, appends x (b, d) and returns
act(sum(state * weight) + bias) (b, d). No host syncs and no allocation but the output, so it can be
captured in a CUDA graph.

Falls back to the reference for: w outside 2..4, x not 3-D, an activation other than None/'silu'/'swish'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from qmamba.ops.causal_conv1d.naive import causal_conv1d_ref, causal_conv1d_update_ref

TAPS = 4  # the sequence kernels run 4 taps; a narrower weight is zero-padded on the left
# (channels, positions) per tile, the contiguous dim first: (64, 16) for channel-last x, (16, 64) else
TILE_LONG, TILE_SHORT = 64, 16
FWD_WARPS, BWD_WARPS = 4, 8
BWD_TILES = 4  # tiles along l per backward program (its dweight partial sums cover 4 tiles)
BLOCK_D_UPDATE = 64


@triton.jit
def _init_col(init_ptr, d_idx, d, sid, sil, POS: tl.constexpr, W: tl.constexpr):
    """initial_states at position POS in {-3, -2, -1} (its column POS + w-1), fp32; zeros before it."""
    if POS + W - 1 >= 0:
        col = tl.load(init_ptr + d_idx * sid + (POS + W - 1) * sil, mask=d_idx < d, other=0.0).to(tl.float32)
    else:
        col = tl.zeros(d_idx.shape, dtype=tl.float32)
    return col


@triton.jit
def _init_cols(init_ptr, d_idx, d, sid, sil, USE_INIT: tl.constexpr, W: tl.constexpr):
    """The columns of initial_states at positions -3, -2, -1 (zeros where absent or unused)."""
    if USE_INIT:
        cols = (_init_col(init_ptr, d_idx, d, sid, sil, -3, W), _init_col(init_ptr, d_idx, d, sid, sil, -2, W),
                _init_col(init_ptr, d_idx, d, sid, sil, -1, W))
    else:
        z = tl.zeros(d_idx.shape, dtype=tl.float32)
        cols = (z, z, z)
    return cols


@triton.jit
def _load_xp(x_ptr, d_idx, t, d, l, sxd, sxl, im3, im2, im1, USE_INIT: tl.constexpr):
    """xp = [initial_states, x] at positions t (broadcasts with d_idx), fp32; zero before the states.
    initial_states enters as the column vectors im3, im2, im1 (positions -3, -2, -1) placed by a select,
    so it needs no per-element pointers."""
    val = tl.load(x_ptr + d_idx * sxd + t * sxl, mask=(d_idx < d) & (t >= 0) & (t < l), other=0.0).to(tl.float32)
    if USE_INIT:
        val += tl.where(t == -3, im3, 0.0) + tl.where(t == -2, im2, 0.0) + tl.where(t == -1, im1, 0.0)
    return val


@triton.jit
def _tap(w_ptr, offs_d, md, swd, swk, J: tl.constexpr, xdt: tl.constexpr):
    """Tap J (of 4) of the weight as a (BD, 1) fp32 column, rounded to x's dtype as the reference does."""
    return tl.load(w_ptr + offs_d * swd + J * swk, mask=md, other=0.0).to(xdt).to(tl.float32)[:, None]


@triton.jit
def _fwd_tile(x_ptr, w_ptr, b_ptr, init_ptr, y_ptr, offs_d, t, d, l, sxd, sxl, swd, swk, sid, sil, syd, syl,
              W: tl.constexpr, USE_INIT: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
              BD: tl.constexpr, BL: tl.constexpr):
    """y for channels offs_d (BD,) at positions t (BL,)."""
    md = offs_d < d
    xdt = x_ptr.dtype.element_ty
    im3, im2, im1 = _init_cols(init_ptr, offs_d[:, None], d, sid, sil, USE_INIT, W)  # (BD, 1) each
    acc = tl.zeros((BD, BL), dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_d, mask=md, other=0.0).to(xdt).to(tl.float32)[:, None]
    for j in tl.static_range(4):  # tap j multiplies xp[t + j - 3]
        xj = _load_xp(x_ptr, offs_d[:, None], t[None, :] + (j - 3), d, l, sxd, sxl, im3, im2, im1,
                      USE_INIT)  # (BD, BL)
        acc += _tap(w_ptr, offs_d, md, swd, swk, j, xdt) * xj
    if SILU:
        acc = acc * tl.sigmoid(acc)
    mask = md[:, None] & (t[None, :] < l)
    tl.store(y_ptr + offs_d[:, None] * syd + t[None, :] * syl, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _conv_fwd_kernel(
    x_ptr, w_ptr, b_ptr, init_ptr, y_ptr, fin_ptr,
    d, l, sxb, sxd, sxl, swd, swk, sib, sid, sil, syb, syd, syl,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, RETURN_FINAL: tl.constexpr,
    SILU: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr,
):
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_d = pid_d * BD + tl.arange(0, BD)  # (BD,)
    t = pid_l * BL + tl.arange(0, BL)  # (BL,)
    x_ptr += pid_b.to(tl.int64) * sxb
    init_ptr += pid_b.to(tl.int64) * sib
    y_ptr += pid_b.to(tl.int64) * syb
    if HAS_INIT:  # only the first tile reads initial_states: the others run the lighter code
        if pid_l == 0:
            _fwd_tile(x_ptr, w_ptr, b_ptr, init_ptr, y_ptr, offs_d, t, d, l, sxd, sxl, swd, swk, sid, sil, syd, syl,
                      W, True, HAS_BIAS, SILU, BD, BL)
        else:
            _fwd_tile(x_ptr, w_ptr, b_ptr, init_ptr, y_ptr, offs_d, t, d, l, sxd, sxl, swd, swk, sid, sil, syd, syl,
                      W, False, HAS_BIAS, SILU, BD, BL)
    else:
        _fwd_tile(x_ptr, w_ptr, b_ptr, init_ptr, y_ptr, offs_d, t, d, l, sxd, sxl, swd, swk, sid, sil, syd, syl,
                  W, False, HAS_BIAS, SILU, BD, BL)
    if RETURN_FINAL:  # written by the last tile along l
        fin_ptr += pid_b.to(tl.int64) * d * (W - 1)
        im3, im2, im1 = _init_cols(init_ptr, offs_d, d, sid, sil, HAS_INIT, W)  # (BD,) each
        last = (offs_d * 0 + pid_l) == tl.num_programs(0) - 1  # (BD,); a vector keeps the interpreter happy
        for i in tl.static_range(W - 1):
            pos = offs_d * 0 + (l - (W - 1) + i)  # (BD,) one position, as a vector
            v = _load_xp(x_ptr, offs_d, pos, d, l, sxd, sxl, im3, im2, im1, HAS_INIT)
            tl.store(fin_ptr + offs_d * (W - 1) + i, v.to(fin_ptr.dtype.element_ty), mask=(offs_d < d) & last)


@triton.jit
def _grad_pre(dy_ptr, d2, ts, md2, l, sgd, sgl, pre, SILU: tl.constexpr):
    """g = dy[ts] * act'(pre) (zero outside 0 <= ts < l), fp32 (BD, BL)."""
    g = tl.load(dy_ptr + d2 * sgd + ts * sgl, mask=md2 & (ts >= 0) & (ts < l), other=0.0).to(tl.float32)
    if SILU:
        sig = tl.sigmoid(pre)
        g = g * sig * (1.0 + pre * (1.0 - sig))
    return g


@triton.jit
def _bwd_tile(x_ptr, w_ptr, b_ptr, init_ptr, dy_ptr, dfin_ptr, dx_ptr, dinit_ptr, offs_d, t0, d, l,
              sxd, sxl, swd, swk, sid, sil, sgd, sgl, sfd, sfl, sdd, sdl,
              W: tl.constexpr, USE_INIT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DFIN: tl.constexpr,
              SILU: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr):
    """dx (and dinitial_states) at positions t0 + [0, BL); returns this tile's dweight taps and dbias (BD,)."""
    md = offs_d < d
    d2, md2 = offs_d[:, None], md[:, None]  # (BD, 1)
    t2 = t0 + tl.arange(0, BL)[None, :]  # (1, BL)
    xdt = x_ptr.dtype.element_ty
    im3, im2, im1 = _init_cols(init_ptr, d2, d, sid, sil, USE_INIT, W)  # (BD, 1) each
    w0, w1 = _tap(w_ptr, offs_d, md, swd, swk, 0, xdt), _tap(w_ptr, offs_d, md, swd, swk, 1, xdt)  # (BD, 1)
    w2, w3 = _tap(w_ptr, offs_d, md, swd, swk, 2, xdt), _tap(w_ptr, offs_d, md, swd, swk, 3, xdt)
    bias = tl.zeros((BD, 1), dtype=tl.float32)
    if HAS_BIAS:
        bias += tl.load(b_ptr + offs_d, mask=md, other=0.0).to(xdt).to(tl.float32)[:, None]
    # the 7 shifted tiles xp[t - 3 .. t + 3], each loaded once; pre[t + s] = bias + sum_j w_j xp[t + s + j - 3]
    xm3 = _load_xp(x_ptr, d2, t2 - 3, d, l, sxd, sxl, im3, im2, im1, USE_INIT)  # (BD, BL)
    xm2 = _load_xp(x_ptr, d2, t2 - 2, d, l, sxd, sxl, im3, im2, im1, USE_INIT)
    xm1 = _load_xp(x_ptr, d2, t2 - 1, d, l, sxd, sxl, im3, im2, im1, USE_INIT)
    x0 = _load_xp(x_ptr, d2, t2, d, l, sxd, sxl, im3, im2, im1, USE_INIT)
    g = _grad_pre(dy_ptr, d2, t2, md2, l, sgd, sgl, bias + w0 * xm3 + w1 * xm2 + w2 * xm1 + w3 * x0, SILU)
    # this tile's share of dweight and dbias (g is zero outside 0 <= t < l)
    s0, s1, s2, s3, s4 = (tl.sum(g * xm3, axis=1), tl.sum(g * xm2, axis=1), tl.sum(g * xm1, axis=1),
                          tl.sum(g * x0, axis=1), tl.sum(g, axis=1))
    dx = w3 * g  # dx[t] = sum_s w_{3-s} g[t + s]
    xp1 = _load_xp(x_ptr, d2, t2 + 1, d, l, sxd, sxl, im3, im2, im1, USE_INIT)
    dx += w2 * _grad_pre(dy_ptr, d2, t2 + 1, md2, l, sgd, sgl, bias + w0 * xm2 + w1 * xm1 + w2 * x0 + w3 * xp1, SILU)
    xp2 = _load_xp(x_ptr, d2, t2 + 2, d, l, sxd, sxl, im3, im2, im1, USE_INIT)
    dx += w1 * _grad_pre(dy_ptr, d2, t2 + 2, md2, l, sgd, sgl, bias + w0 * xm1 + w1 * x0 + w2 * xp1 + w3 * xp2, SILU)
    xp3 = _load_xp(x_ptr, d2, t2 + 3, d, l, sxd, sxl, im3, im2, im1, USE_INIT)
    dx += w0 * _grad_pre(dy_ptr, d2, t2 + 3, md2, l, sgd, sgl, bias + w0 * x0 + w1 * xp1 + w2 * xp2 + w3 * xp3, SILU)
    if HAS_DFIN:  # final states are xp's last w-1 positions: their gradient adds straight in
        j = t2 - (l - (W - 1))  # (1, BL) column of final_states
        dx += tl.load(dfin_ptr + d2 * sfd + j * sfl, mask=md2 & (j >= 0) & (j < W - 1), other=0.0).to(tl.float32)
    tl.store(dx_ptr + d2 * sdd + t2 * sdl, dx.to(dx_ptr.dtype.element_ty), mask=md2 & (t2 >= 0) & (t2 < l))
    if USE_INIT:  # t < 0: the gradient of initial_states (b, d, w-1), contiguous
        tl.store(dinit_ptr + d2 * (W - 1) + t2 + (W - 1), dx.to(dinit_ptr.dtype.element_ty), mask=md2 & (t2 < 0))
    return s0, s1, s2, s3, s4


@triton.jit
def _conv_bwd_kernel(
    x_ptr, w_ptr, b_ptr, init_ptr, dy_ptr, dfin_ptr, dx_ptr, dinit_ptr, part_ptr,
    d, l, sxb, sxd, sxl, swd, swk, sib, sid, sil, sgb, sgd, sgl, sfb, sfd, sfl, sdb, sdd, sdl,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_DFIN: tl.constexpr,
    SILU: tl.constexpr, BD: tl.constexpr, BL: tl.constexpr, TILES: tl.constexpr,
):
    pid_l, pid_d, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_d = pid_d * BD + tl.arange(0, BD)  # (BD,)
    x_ptr += pid_b.to(tl.int64) * sxb
    init_ptr += pid_b.to(tl.int64) * sib
    dy_ptr += pid_b.to(tl.int64) * sgb
    dfin_ptr += pid_b.to(tl.int64) * sfb
    dx_ptr += pid_b.to(tl.int64) * sdb
    dinit_ptr += pid_b.to(tl.int64) * d * (W - 1)
    a0 = tl.zeros((BD,), dtype=tl.float32)  # this program's dweight taps a0..a3 and dbias a4
    a1, a2, a3, a4 = a0, a0, a0, a0
    for i in range(TILES):
        tile = pid_l * TILES + i
        t0 = tile * BL - (W - 1)  # tiles start at -(w-1): the first one also yields dinitial_states
        if HAS_INIT:  # only tile 0 reaches t < 0 (BL >= 6): the others run the lighter code
            if tile == 0:
                p0, p1, p2, p3, p4 = _bwd_tile(
                    x_ptr, w_ptr, b_ptr, init_ptr, dy_ptr, dfin_ptr, dx_ptr, dinit_ptr, offs_d, t0, d, l,
                    sxd, sxl, swd, swk, sid, sil, sgd, sgl, sfd, sfl, sdd, sdl,
                    W, True, HAS_BIAS, HAS_DFIN, SILU, BD, BL)
            else:
                p0, p1, p2, p3, p4 = _bwd_tile(
                    x_ptr, w_ptr, b_ptr, init_ptr, dy_ptr, dfin_ptr, dx_ptr, dinit_ptr, offs_d, t0, d, l,
                    sxd, sxl, swd, swk, sid, sil, sgd, sgl, sfd, sfl, sdd, sdl,
                    W, False, HAS_BIAS, HAS_DFIN, SILU, BD, BL)
        else:
            p0, p1, p2, p3, p4 = _bwd_tile(
                x_ptr, w_ptr, b_ptr, init_ptr, dy_ptr, dfin_ptr, dx_ptr, dinit_ptr, offs_d, t0, d, l,
                sxd, sxl, swd, swk, sid, sil, sgd, sgl, sfd, sfl, sdd, sdl,
                W, False, HAS_BIAS, HAS_DFIN, SILU, BD, BL)
        a0, a1, a2, a3, a4 = a0 + p0, a1 + p1, a2 + p2, a3 + p3, a4 + p4
    # this program's dweight taps and dbias -> part_ptr (programs, 5, d)
    part_ptr += ((pid_b * tl.num_programs(0) + pid_l) * 5).to(tl.int64) * d + offs_d
    md = offs_d < d
    tl.store(part_ptr, a0, mask=md)
    tl.store(part_ptr + d, a1, mask=md)
    tl.store(part_ptr + 2 * d, a2, mask=md)
    tl.store(part_ptr + 3 * d, a3, mask=md)
    tl.store(part_ptr + 4 * d, a4, mask=md)


@triton.jit
def _conv_update_kernel(
    x_ptr, s_ptr, w_ptr, b_ptr, y_ptr, d, sxb, sxd, ssb, ssd, ssk, swd, swk, syb,
    W: tl.constexpr, WP: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BD: tl.constexpr,
):
    pid_d, pid_b = tl.program_id(0), tl.program_id(1)
    offs_d = pid_d * BD + tl.arange(0, BD)  # (BD,)
    k = tl.arange(0, WP)[None, :]  # (1, WP) state column
    md = offs_d < d
    s_ptr += pid_b.to(tl.int64) * ssb + offs_d[:, None] * ssd  # (BD, 1)
    sdt = s_ptr.dtype.element_ty
    shifted = tl.load(s_ptr + (k + 1) * ssk, mask=md[:, None] & (k + 1 < W), other=0.0)  # (BD, WP)
    xv = tl.load(x_ptr + pid_b.to(tl.int64) * sxb + offs_d * sxd, mask=md, other=0.0).to(sdt)  # (BD,)
    new = tl.where(k == W - 1, xv[:, None], shifted)  # (BD, WP) in the state's dtype
    tl.store(s_ptr + k * ssk, new, mask=md[:, None] & (k < W))
    wt = tl.load(w_ptr + offs_d[:, None] * swd + k * swk, mask=md[:, None] & (k < W), other=0.0).to(tl.float32)
    y = tl.sum(new.to(tl.float32) * wt, axis=1)  # (BD,)
    if HAS_BIAS:
        y += tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    if SILU:
        y = y * tl.sigmoid(y)
    tl.store(y_ptr + pid_b.to(tl.int64) * syb + offs_d, y.to(y_ptr.dtype.element_ty), mask=md)


def _empty_like_layout(x: Tensor, dtype: torch.dtype) -> Tensor:
    """An empty (b, d, l) tensor laid out like x: channel-last if x is contiguous along d."""
    b, d, l = x.shape
    if x.stride(1) == 1 and l > 1:
        return torch.empty(b, l, d, device=x.device, dtype=dtype).transpose(1, 2)
    return torch.empty(b, d, l, device=x.device, dtype=dtype)


def _tile(x: Tensor) -> tuple[int, int]:
    """(BD, BL): the long side of the tile along x's contiguous dim."""
    return (TILE_LONG, TILE_SHORT) if x.stride(1) == 1 else (TILE_SHORT, TILE_LONG)


def _padded(weight: Tensor) -> Tensor:
    """(d, w) -> (d, 4): zero taps on the left (a no-op view for w == 4)."""
    return weight if weight.shape[1] == TAPS else F.pad(weight, (TAPS - weight.shape[1], 0))


def _init_args(x: Tensor, init: Tensor | None) -> tuple[Tensor, tuple[int, int, int]]:
    """initial_states in x's dtype (as the reference concatenates) and its strides; x and zeros when absent."""
    return (init.to(x.dtype), tuple(init.stride())) if init is not None else (x, (0, 0, 0))


def _conv_fwd(x, weight, bias, init, return_final, silu):
    b, d, l = x.shape
    w = weight.shape[1]
    y = _empty_like_layout(x, x.dtype)  # (b, d, l)
    fin = torch.empty(b, d, w - 1, device=x.device, dtype=x.dtype) if return_final else None
    init_t, si = _init_args(x, init)
    wp = _padded(weight)
    bd, bl = _tile(x)
    grid = (triton.cdiv(l, bl), triton.cdiv(d, bd), b)
    _conv_fwd_kernel[grid](
        x, wp, bias if bias is not None else wp, init_t, y, fin if fin is not None else y,
        d, l, *x.stride(), *wp.stride(), *si, *y.stride(),
        W=w, HAS_BIAS=bias is not None, HAS_INIT=init is not None, RETURN_FINAL=return_final,
        SILU=silu, BD=bd, BL=bl, num_warps=FWD_WARPS,
    )
    return y, fin


def _conv_bwd(x, weight, bias, init, dy, dfin, silu):
    b, d, l = x.shape
    w = weight.shape[1]
    dx = _empty_like_layout(x, x.dtype)
    dinit = torch.empty(b, d, w - 1, device=x.device, dtype=init.dtype) if init is not None else None
    bd, bl = _tile(x)
    n_l = triton.cdiv(l + w - 1, bl * BWD_TILES)
    part = torch.empty(b * n_l, TAPS + 1, d, device=x.device, dtype=torch.float32)  # per-program sums
    init_t, si = _init_args(x, init)
    wp = _padded(weight)
    sf = tuple(dfin.stride()) if dfin is not None else (0, 0, 0)
    _conv_bwd_kernel[(n_l, triton.cdiv(d, bd), b)](
        x, wp, bias if bias is not None else wp, init_t, dy, dfin if dfin is not None else dy,
        dx, dinit if dinit is not None else dx, part,
        d, l, *x.stride(), *wp.stride(), *si, *dy.stride(), *sf, *dx.stride(),
        W=w, HAS_BIAS=bias is not None, HAS_INIT=init is not None, HAS_DFIN=dfin is not None,
        SILU=silu, BD=bd, BL=bl, TILES=BWD_TILES, num_warps=BWD_WARPS,
    )
    sums = part.sum(0)  # (5, d): the 4 taps, then the bias
    dweight = sums[TAPS - w:TAPS].t().to(weight.dtype)  # (d, w)
    dbias = sums[TAPS].to(bias.dtype) if bias is not None else None
    return dx, dweight, dbias, dinit


class _CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, initial_states, return_final_states, silu):
        y, fin = _conv_fwd(x, weight, bias, initial_states, return_final_states, silu)
        ctx.save_for_backward(x, weight, bias, initial_states)
        ctx.silu = silu
        return y, fin

    @staticmethod
    def backward(ctx, dy, dfin):
        x, weight, bias, init = ctx.saved_tensors
        dx, dweight, dbias, dinit = _conv_bwd(x, weight, bias, init, dy, dfin, ctx.silu)
        return dx, dweight, dbias, dinit, None, None


def causal_conv1d_triton(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
    activation: str | None = None,
):
    """Triton ``causal_conv1d_ref``: same arguments, returns y (b, d, l) [, final states (b, d, w-1)].
    y (and dx) are laid out like x (channel-last when x.stride(1) == 1)."""
    if x.dim() != 3 or not 2 <= weight.shape[-1] <= 4 or activation not in (None, "silu", "swish"):
        return causal_conv1d_ref(x, weight, bias, initial_states, return_final_states, activation)
    y, fin = _CausalConv1dFn.apply(x, weight, bias, initial_states, return_final_states, activation is not None)
    return (y, fin) if return_final_states else y


def causal_conv1d_update_triton(
    x: Tensor,
    conv_state: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """Triton ``causal_conv1d_update_ref``: x (b, d), conv_state (b, d, w) rolled in place -> y (b, d).
    CUDA-graph capturable (no host syncs; allocates only y). ``out`` may be x itself (a program reads its
    channels' x before it writes them)."""
    if x.dim() != 2 or not 2 <= weight.shape[-1] <= 4 or activation not in (None, "silu", "swish"):
        return causal_conv1d_update_ref(x, conv_state, weight, bias, activation, out)
    b, d = x.shape
    w = weight.shape[1]
    direct = out is not None and out.shape == x.shape and out.dtype == x.dtype and out.stride(1) == 1
    y = out if direct else torch.empty(b, d, device=x.device, dtype=x.dtype)
    _conv_update_kernel[(triton.cdiv(d, BLOCK_D_UPDATE), b)](
        x, conv_state, weight, bias if bias is not None else weight, y,
        d, *x.stride(), *conv_state.stride(), *weight.stride(), y.stride(0),
        W=w, WP=triton.next_power_of_2(w), HAS_BIAS=bias is not None, SILU=activation is not None,
        BD=BLOCK_D_UPDATE, num_warps=2,
    )
    return y if out is None or direct else out.copy_(y)
