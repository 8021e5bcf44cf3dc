"""Mamba-1 selective scan, chunk-parallel, in Triton: the forward kernels, the autograd wrapper and the entry
point of the ``triton`` backend (which takes ``fused_recurrent.py`` for inference on many rows).

    dt_t = softplus(delta_t + delta_bias)   (or delta_t + delta_bias)
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t,   y_t = <C_t, h_t> + D u_t,   out_t = y_t silu(z_t)

The sequence is cut into chunks of T positions. A program owns BLOCK_D channels of one chunk of
one batch row, grid (cdiv(d, BLOCK_D), nc, b), holds (BLOCK_D, T) tiles of u, dt, z in registers
(loaded coalesced along l) and loops over the n states, so batch 1 still launches thousands of
programs and nothing of size (b, d, l, n) is ever stored:

1. ``_chunk_state_fwd``: the state each chunk reaches from a zero state, in closed form
   sum_t exp(A (S_end - S_t)) dt_t B_t u_t (S: cumulative dt inside the chunk), and the chunk's
   dt sum.  -> states (b, nc, n, d), dtsum (b, nc, d)
2. ``chunk_carry`` (``chunk_tiles.py``, grid (cdiv(n d, BLOCK), b)): walks the chunks in order,
   h = exp(A dtsum_c) h + end_c, overwriting ``states`` with the state entering each chunk; writes the last
   state.
3. ``_chunk_out_fwd``: rescans every chunk from its entry state (tl.associative_scan over T of
   the pairs (exp(dt A), dt B u)) and writes out = (sum_n C h + D u) * silu(z).

The per-state vectors of the n loops (a column of A, rows of B and C, entry states) are loaded
one state ahead. Only the entry states (b, nc, n, d) and dtsum (b, nc, d), both fp32, are kept for
the backward (chunk_bwd.py), which recomputes everything inside a chunk.

Supported: real A, B/C (b, n, l) or grouped (b, g, n, l) (B and C may differ), n <= 256, fp16/bf16/
fp32 inputs, any strides. The forward reads strided inputs in place; the backward first copies u,
delta, z and dout that are not contiguous along l (Triton would otherwise lay the tiles out along d
and scan across warps); Mamba-1 passes delta and z as d-contiguous views. Falls back to
``selective_scan_ref``: complex A/B/C, float64 inputs, n > 256, d not divisible by the groups.
``chunk_size`` is honoured when it is a power of two in [4, 256] (else T = 64): it changes only
rounding, as in the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qmamba.ops.common.launch import bc_strides
from qmamba.ops.selective_scan.chunk_bwd import scan_bwd
from qmamba.ops.selective_scan.chunk_tiles import (
    LOG2E,
    Plan,
    a_col,
    bc_row,
    carry_states,
    load_bdl,
    load_dt,
    row_ptr,
    scan_combine,
    st_vec,
    state_base,
    tile_offsets,
)
from qmamba.ops.selective_scan.chunked import selective_scan_ref
from qmamba.ops.selective_scan.fused_recurrent import scan_sequential, use_sequential

FWD_BLOCK_D, FWD_WARPS = 16, 4  # fwd tiles (BLOCK_D, T) = (16, 64): 8 fp32 per thread
MAX_STATE = 256


@triton.jit
def _chunk_state_fwd(u_ptr, dl_ptr, bias_ptr, A_ptr, B_ptr, st_ptr, dtsum_ptr,
                     d, l, n, nc, dpg_B, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sA_d, sA_n, sB_b, sB_g, sB_n, sB_l,
                     HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr):
    offs_d, offs_t, mask_d, mask = tile_offsets(d, l, BLOCK_D, T)
    dt, _ = load_dt(dl_ptr, sdl_b, sdl_d, sdl_l, bias_ptr, offs_d, offs_t, mask_d, mask, HAS_BIAS, SOFTPLUS)  # (BD, T)
    dtu = dt * load_bdl(u_ptr, su_b, su_d, su_l, offs_d, offs_t, mask)  # (BD, T)
    total = tl.sum(dt, axis=1)  # (BD,)
    rest = total[:, None] - tl.cumsum(dt, axis=1)  # (BD, T): dt summed over the later positions
    B_row = row_ptr(B_ptr, sB_b, sB_g, sB_l, dpg_B, offs_t, BLOCK_D)
    st = state_base(st_ptr, d, n, nc) + offs_d
    Ai, Bi = a_col(A_ptr, 0, n, sA_d, sA_n, offs_d, mask_d), bc_row(B_row, 0, n, l, sB_n, offs_t)
    for i in range(n):  # the next state's vectors are loaded while this one computes
        A_nx, B_nx = a_col(A_ptr, i + 1, n, sA_d, sA_n, offs_d, mask_d), bc_row(B_row, i + 1, n, l, sB_n, offs_t)
        w = tl.exp2((Ai * LOG2E)[:, None] * rest) * dtu * Bi[None, :]  # (BD, T)
        tl.store(st + i * d, tl.sum(w, axis=1), mask=mask_d)
        Ai, Bi = A_nx, B_nx
    row = (tl.program_id(2).to(tl.int64) * nc + tl.program_id(1)) * d
    tl.store(dtsum_ptr + row + offs_d, total, mask=mask_d)


@triton.jit
def _chunk_out_fwd(u_ptr, dl_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, st_ptr, out_ptr,
                   d, l, n, nc, dpg_B, dpg_C, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l, sA_d, sA_n,
                   sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
                   HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                   BLOCK_D: tl.constexpr, T: tl.constexpr):
    offs_d, offs_t, mask_d, mask = tile_offsets(d, l, BLOCK_D, T)
    dt, _ = load_dt(dl_ptr, sdl_b, sdl_d, sdl_l, bias_ptr, offs_d, offs_t, mask_d, mask, HAS_BIAS, SOFTPLUS)  # (BD, T)
    u = load_bdl(u_ptr, su_b, su_d, su_l, offs_d, offs_t, mask)
    dtu = dt * u
    first = (tl.arange(0, T) == 0)[None, :]
    B_row = row_ptr(B_ptr, sB_b, sB_g, sB_l, dpg_B, offs_t, BLOCK_D)
    C_row = row_ptr(C_ptr, sC_b, sC_g, sC_l, dpg_C, offs_t, BLOCK_D)
    st = state_base(st_ptr, d, n, nc) + offs_d
    y = tl.zeros((BLOCK_D, T), tl.float32)
    Ai, Bi = a_col(A_ptr, 0, n, sA_d, sA_n, offs_d, mask_d), bc_row(B_row, 0, n, l, sB_n, offs_t)
    Ci, h0 = bc_row(C_row, 0, n, l, sC_n, offs_t), st_vec(st, 0, n, d, mask_d)  # h0: state entering the chunk
    for i in range(n):  # the next state's vectors are loaded while this one computes
        A_nx, B_nx = a_col(A_ptr, i + 1, n, sA_d, sA_n, offs_d, mask_d), bc_row(B_row, i + 1, n, l, sB_n, offs_t)
        C_nx, h0_nx = bc_row(C_row, i + 1, n, l, sC_n, offs_t), st_vec(st, i + 1, n, d, mask_d)
        a = tl.exp2((Ai * LOG2E)[:, None] * dt)  # (BD, T)
        x = dtu * Bi[None, :]
        x = tl.where(first, x + a * h0[:, None], x)
        _, h = tl.associative_scan((a, x), 1, scan_combine)  # (BD, T): the states
        y += h * Ci[None, :]
        Ai, Bi, Ci, h0 = A_nx, B_nx, C_nx, h0_nx
    if HAS_D:
        y += u * tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[:, None]
    if HAS_Z:
        z = load_bdl(z_ptr, sz_b, sz_d, sz_l, offs_d, offs_t, mask)
        y *= z / (1.0 + tl.exp(-z))
    out = out_ptr + tl.program_id(2).to(tl.int64) * d * l + offs_d.to(tl.int64)[:, None] * l + offs_t[None, :]
    tl.store(out, y.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- host side


def _scan_fwd(u, delta, A, B, C, D, z, bias, h0, softplus: bool, p: Plan):
    """out (b, d, l), last state (b, d, n), entry states (b, nc, n, d), dt sums (b, nc, d)."""
    f32 = dict(device=u.device, dtype=torch.float32)
    out = torch.empty(p.b, p.d, p.l, device=u.device, dtype=u.dtype)
    states, dtsum = torch.empty(p.b, p.nc, p.n, p.d, **f32), torch.empty(p.b, p.nc, p.d, **f32)
    last = torch.empty(p.b, p.d, p.n, **f32)
    grid, flags = p.grid(p.block_d), dict(HAS_BIAS=bias is not None, SOFTPLUS=softplus)
    bias_ = bias if bias is not None else u
    _chunk_state_fwd[grid](
        u, delta, bias_, A, B, states, dtsum, p.d, p.l, p.n, p.nc, p.dpg_B, *u.stride(), *delta.stride(),
        *A.stride(), *bc_strides(B), **flags, BLOCK_D=p.block_d, T=p.T, num_warps=FWD_WARPS,
    )
    carry_states(states, dtsum, A, h0, last, p, reverse=False)
    z_ = z if z is not None else u
    _chunk_out_fwd[grid](
        u, delta, bias_, A, B, C, D if D is not None else u, z_, states, out, p.d, p.l, p.n, p.nc, p.dpg_B, p.dpg_C,
        *u.stride(), *delta.stride(), *z_.stride(), *A.stride(), *bc_strides(B), *bc_strides(C),
        **flags, HAS_D=D is not None, HAS_Z=z is not None, BLOCK_D=p.block_d, T=p.T, num_warps=FWD_WARPS,
    )
    return out, last, states, dtsum


class SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, chunk_size):
        B4, C4 = (M if M.dim() == 4 else M.unsqueeze(1) for M in (B, C))
        p = Plan(u, A, B4, C4, chunk_size, FWD_BLOCK_D)
        h0 = initial_state.float() if initial_state is not None else None
        out, last, states, dtsum = _scan_fwd(u, delta, A, B4, C4, D, z, delta_bias, h0, softplus, p)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states, dtsum)
        ctx.plan, ctx.softplus, ctx.has_h0 = p, softplus, initial_state is not None
        ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        ctx.set_materialize_grads(False)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        return (*scan_bwd(ctx, dout, dlast), None, None)


def _supported(u, A, B, C, D, z, delta_bias, initial_state) -> bool:
    d, n = A.shape
    tensors = [t for t in (u, A, B, C, D, z, delta_bias, initial_state) if t is not None]
    if any(t.is_complex() or t.dtype == torch.float64 for t in tensors) or n > MAX_STATE:
        return False
    return all(M.dim() == 3 or d % M.shape[1] == 0 for M in (B, C))


def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
    return_last_state=False, chunk_size=None,
):
    """Triton selective scan; arguments and return convention of ``selective_scan_ref``."""
    if not _supported(u, A, B, C, D, z, delta_bias, initial_state):
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state,
                                  return_last_state, chunk_size)
    if use_sequential(u, A.shape[1], delta, A, B, C, D, z, delta_bias, initial_state):  # inference, many rows
        B4, C4 = (M if M.dim() == 4 else M.unsqueeze(1) for M in (B, C))
        h0 = initial_state.float() if initial_state is not None else None
        out, last = scan_sequential(u, delta, A, B4, C4, D, z, delta_bias, h0, bool(delta_softplus))
    else:
        out, last = SelectiveScanFn.apply(
            u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus), chunk_size)
    return (out, last) if return_last_state else out
