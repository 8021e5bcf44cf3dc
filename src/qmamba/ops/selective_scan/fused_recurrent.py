"""Mamba-1 selective scan forward, one position after another: for inference on many rows (a batched prefill).

The chunk-parallel forward of ``chunk.py`` exists so that batch 1 fills the GPU: it launches channel blocks
x chunks x rows programs and pays for it with three kernels (chunk states from zero, the carry, the rescan)
and an associative scan per state and chunk. When rows x channel blocks alone fill the GPU none of that is
needed. Here a program owns BLOCK_D channels of one row, grid (cdiv(d, BLOCK_D), b), holds their whole state
(BLOCK_D, NS) in registers and walks the positions in order:

    dt = softplus(delta_t + bias);  h = exp(dt A) h + dt u_t B_t;  out_t = (<h, C_t> + D u_t) silu(z_t)

Each position reads one value per channel of u, delta and z (strided along d: the lines of the following
positions stay in L1) and the n values of B and C. Triton lays the (BLOCK_D, NS) state out as the loads of
A and the states make it (n contiguous): four states a lane, each channel spread over lanes, so the sum over
states takes shuffles and each channel's softplus and gate run on every lane that holds one of its states.

Nothing is saved for a backward: ``selective_scan_triton`` takes this path only when no input needs a
gradient, n <= MAX_STATE, and rows x channels reach ``MIN_ROW_CHANNELS``: with too few rows x channels the
GPU's warps wait on each position's dependency. Tiles and ``MIN_ROW_CHANNELS`` chosen by
``benchmarks/scan_fwd.py``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qmamba.ops.common.kernel_math import LOG2E, softplus
from qmamba.ops.common.launch import bc_strides

BLOCK_D, WARPS = 16, 1
AHEAD = False  # True: each position's loads are issued a position ahead, before the previous one's arithmetic
MAX_STATE = 64  # the state of BLOCK_D channels lives in registers
MIN_ROW_CHANNELS: int | None = 16 * 5120  # None: never


@triton.jit
def _position(u_row, dl_row, B_row, C_row, z_row, t, l, su_l, sdl_l, sB_l, sC_l, sz_l, mask_d, mask_n,
              HAS_Z: tl.constexpr):
    """Position t's u, delta (BD,), B, C (NS,) and z (BD,; u without z), as stored; past the end, the last
    position's again (in bounds, unused)."""
    t = tl.minimum(t, l - 1)
    u = tl.load(u_row + t * su_l, mask=mask_d, other=0.0)
    dt = tl.load(dl_row + t * sdl_l, mask=mask_d, other=0.0)
    Bt = tl.load(B_row + t * sB_l, mask=mask_n, other=0.0)
    Ct = tl.load(C_row + t * sC_l, mask=mask_n, other=0.0)
    z = u
    if HAS_Z:
        z = tl.load(z_row + t * sz_l, mask=mask_d, other=0.0)
    return u, dt, Bt, Ct, z


@triton.jit
def _channel_rows(u_ptr, dl_ptr, bias_ptr, D_ptr, z_ptr, out_ptr, pid_b, offs_d, mask_d, d, l, su_b, su_d, sdl_b,
                  sdl_d, sz_b, sz_d, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr):
    """The block's per-channel constants (delta bias, D; 0 without) and its (BD,) pointers at position 0."""
    bias = tl.zeros(offs_d.shape, tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    Dv = tl.zeros(offs_d.shape, tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    d64 = offs_d.to(tl.int64)
    u_row = u_ptr + pid_b * su_b + d64 * su_d
    dl_row = dl_ptr + pid_b * sdl_b + d64 * sdl_d
    z_row = z_ptr + pid_b * sz_b + d64 * sz_d
    out_row = out_ptr + pid_b * d * l + d64 * l
    return bias, Dv, u_row, dl_row, z_row, out_row


@triton.jit
def _sequential_fwd(u_ptr, dl_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, h0_ptr, last_ptr, out_ptr,
                    d, l, n, dpg_B, dpg_C, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l, sA_d, sA_n,
                    sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l, s0_b, s0_d, s0_n,
                    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                    HAS_H0: tl.constexpr, BLOCK_D: tl.constexpr, NS: tl.constexpr, AHEAD: tl.constexpr):
    pid_d, pid_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, NS)
    mask_d, mask_n = offs_d < d, offs_n < n
    mask = mask_d[:, None] & mask_n[None, :]
    h = tl.zeros((BLOCK_D, NS), tl.float32)
    A2 = tl.load(A_ptr + offs_d.to(tl.int64)[:, None] * sA_d + offs_n[None, :] * sA_n, mask=mask, other=0.0)
    A2 = A2.to(tl.float32) * LOG2E  # 0 on padding: padded states stay 0
    if HAS_H0:
        h0 = h0_ptr + pid_b * s0_b + offs_d.to(tl.int64)[:, None] * s0_d + offs_n[None, :] * s0_n
        h = tl.load(h0, mask=mask, other=0.0).to(tl.float32)
    bias, Dv, u_row, dl_row, z_row, out_row = _channel_rows(u_ptr, dl_ptr, bias_ptr, D_ptr, z_ptr, out_ptr, pid_b,
                                                            offs_d, mask_d, d, l, su_b, su_d, sdl_b, sdl_d, sz_b,
                                                            sz_d, HAS_BIAS, HAS_D)
    gB, gC = (pid_d * BLOCK_D) // dpg_B, (pid_d * BLOCK_D) // dpg_C  # the channels' group of B and C
    B_row = B_ptr + pid_b * sB_b + gB * sB_g + offs_n * sB_n  # (NS,)
    C_row = C_ptr + pid_b * sC_b + gC * sC_g + offs_n * sC_n
    if AHEAD:
        u, dt, Bt, Ct, z = _position(u_row, dl_row, B_row, C_row, z_row, 0, l, su_l, sdl_l, sB_l, sC_l, sz_l,
                                     mask_d, mask_n, HAS_Z)
    for t in range(l):
        if AHEAD:  # issue position t + 1's loads before position t's arithmetic
            u_n, dt_n, B_n, C_n, z_n = _position(u_row, dl_row, B_row, C_row, z_row, t + 1, l, su_l, sdl_l, sB_l,
                                                 sC_l, sz_l, mask_d, mask_n, HAS_Z)
        else:
            u, dt, Bt, Ct, z = _position(u_row, dl_row, B_row, C_row, z_row, t, l, su_l, sdl_l, sB_l, sC_l, sz_l,
                                         mask_d, mask_n, HAS_Z)
        uf = u.to(tl.float32)
        dtf = dt.to(tl.float32) + bias
        if SOFTPLUS:
            dtf = softplus(dtf)
        h = tl.exp2(A2 * dtf[:, None]) * h + (dtf * uf)[:, None] * Bt.to(tl.float32)[None, :]
        y = tl.sum(h * Ct.to(tl.float32)[None, :], axis=1) + Dv * uf  # (BD,)
        if HAS_Z:
            zf = z.to(tl.float32)
            y *= zf / (1.0 + tl.exp(-zf))
        tl.store(out_row + t, y.to(out_ptr.dtype.element_ty), mask=mask_d)
        if AHEAD:
            u, dt, Bt, Ct, z = u_n, dt_n, B_n, C_n, z_n
    tl.store(last_ptr + pid_b * d * n + offs_d.to(tl.int64)[:, None] * n + offs_n[None, :], h, mask=mask)


def use_sequential(u: torch.Tensor, n: int, *tensors, min_row_channels: int | None = None) -> bool:
    """Inference (no input needs a gradient), n <= MAX_STATE, and rows x channels >= ``min_row_channels``
    (default ``MIN_ROW_CHANNELS``; None: never)."""
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, *tensors))
    return sequential_for(u.shape[0], u.shape[1], n, grad, min_row_channels)


def sequential_for(rows: int, channels: int, n: int, grad: bool, min_row_channels: int | None = None) -> bool:
    """``use_sequential`` from the shapes alone (``grad``: some input needs a gradient)."""
    floor = MIN_ROW_CHANNELS if min_row_channels is None else min_row_channels
    return floor is not None and n <= MAX_STATE and not grad and rows * channels >= floor


def scan_sequential(u, delta, A, B4, C4, D, z, bias, h0, softplus: bool, block_d: int | None = None,
                    num_warps: int | None = None, ahead: bool | None = None):
    """u, delta, z (b, d, l); A (d, n); B4, C4 (b, g, n, l); h0 (b, d, n) or None -> out (b, d, l) in u's
    dtype, last state (b, d, n) fp32. Any strides. block_d, num_warps, ahead: override the module's settings."""
    b, d, l = u.shape
    n, gB, gC = A.shape[1], B4.shape[1], C4.shape[1]
    bd = min(block_d or BLOCK_D, triton.next_power_of_2(d))
    for g in (gB, gC):  # a block's channels must share their group
        if g > 1:
            bd = min(bd, (d // g) & -(d // g))
    out = torch.empty(b, d, l, device=u.device, dtype=u.dtype)
    last = torch.empty(b, d, n, device=u.device, dtype=torch.float32)
    z_ = z if z is not None else u
    s0 = h0.stride() if h0 is not None else (0, 0, 0)
    args = (u, delta, bias if bias is not None else u, A, B4, C4, D if D is not None else u, z_,
            h0 if h0 is not None else last, last, out, d, l, n, d // gB, d // gC, *u.stride(), *delta.stride(),
            *z_.stride(), *A.stride(), *bc_strides(B4), *bc_strides(C4), *s0)
    flags = {"HAS_BIAS": bias is not None, "SOFTPLUS": softplus, "HAS_D": D is not None, "HAS_Z": z is not None,
             "HAS_H0": h0 is not None, "BLOCK_D": bd, "NS": max(2, triton.next_power_of_2(n))}
    grid = (triton.cdiv(d, bd), b)
    _sequential_fwd[grid](*args, **flags, AHEAD=AHEAD if ahead is None else ahead, num_warps=num_warps or WARPS)
    return out, last
