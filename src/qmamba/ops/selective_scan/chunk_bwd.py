"""Backward of the chunk-parallel Triton selective scan (forward and notation in chunk.py).

With dy_t = dout_t silu(z_t) and g_t = dL/dh_t, the state gradient runs backwards:

    g_t = C_t dy_t + exp(dt_{t+1} A) g_{t+1},      g_{l-1} = C dy + d last_state

and, using a_t h_{t-1} = h_t - x_t (x_t = dt_t B_t u_t) so that no shifted state is needed:

    dA += g (h - x) dt     ddt = sum_n g (h - x) A + u sum_n g B     du = dt sum_n g B + D dy
    dB_t = sum_d g dt u    dC_t = sum_d dy h     dD = sum dy u     dz = dout y silu'(z)

Three launches, as in the forward, over the chunk-entry states saved by it:

1. ``_chunk_state_bwd`` (grid (cdiv(d, BLOCK_D), nc, b)): the gradient each chunk sends to the
   state entering it from its own outputs, in closed form sum_t exp(A S_t) C_t dy_t.
   -> gstates (b, nc, n, d)
2. ``chunk_carry`` with REVERSE (chunk_tiles.py): the gradient entering each chunk from its end, in
   place, and d initial_state.
3. ``_chunk_bwd`` (same grid): per state, rescans the chunk forwards for h and backwards for g
   (tl.associative_scan, reverse=True) and accumulates every gradient; per-position outputs are
   written directly, reductions as per-program partials (dB, dC: (b, d-blocks, n, l); dA: (b, nc,
   n, d); dD, d delta_bias: (b, nc, d)) summed on the host. When the dB/dC partials would pass
   PARTIAL_BC_MAX_BYTES (long batches), the d-blocks atomically add into (b, g, n, l) instead.

Strided u, delta, z, dout are first copied contiguous along l (see chunk.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qmamba.ops.common.launch import bc_strides
from qmamba.ops.selective_scan.chunk_tiles import (
    LOG2E,
    a_col,
    bc_row,
    carry_states,
    l_contiguous,
    load_bdl,
    load_dt,
    row_ptr,
    scan_combine,
    st_vec,
    state_base,
    tile_offsets,
)

# bwd tiles (16, T = 64), 8 fp32 per thread with 4 warps (`benchmarks/kernels.py --scan-bwd-warps 8` times 8 warps)
BWD_BLOCK_D, BWD_WARPS = 16, 4
PARTIAL_BC_MAX_BYTES = 1 << 28  # dB, dC per-block partials up to this size (deterministic), else atomics


@triton.jit
def _put(ptr, val, mask, ATOMIC: tl.constexpr):
    if ATOMIC:
        tl.atomic_add(ptr, val, mask=mask, sem="relaxed")
    else:
        tl.store(ptr, val, mask=mask)


@triton.jit
def _load_dy(dout_ptr, z_ptr, sdo_b, sdo_d, sdo_l, sz_b, sz_d, sz_l, offs_d, offs_t, mask, HAS_Z: tl.constexpr):
    """dout and dy = dout silu(z), (BLOCK_D, T)."""
    dout = load_bdl(dout_ptr, sdo_b, sdo_d, sdo_l, offs_d, offs_t, mask)
    if HAS_Z:
        z = load_bdl(z_ptr, sz_b, sz_d, sz_l, offs_d, offs_t, mask)
        return dout, dout * z / (1.0 + tl.exp(-z))
    return dout, dout


@triton.jit
def _chunk_state_bwd(dout_ptr, z_ptr, dl_ptr, bias_ptr, A_ptr, C_ptr, gst_ptr, d, l, n, nc, dpg_C,
                     sdo_b, sdo_d, sdo_l, sz_b, sz_d, sz_l, sdl_b, sdl_d, sdl_l, sA_d, sA_n, sC_b, sC_g, sC_n, sC_l,
                     HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr,
                     BLOCK_D: tl.constexpr, T: tl.constexpr):
    offs_d, offs_t, mask_d, mask = tile_offsets(d, l, BLOCK_D, T)
    dt, _ = load_dt(dl_ptr, sdl_b, sdl_d, sdl_l, bias_ptr, offs_d, offs_t, mask_d, mask, HAS_BIAS, SOFTPLUS)
    _, dy = _load_dy(dout_ptr, z_ptr, sdo_b, sdo_d, sdo_l, sz_b, sz_d, sz_l, offs_d, offs_t, mask, HAS_Z)  # (BD, T)
    upto = tl.cumsum(dt, axis=1)  # (BD, T): dt summed from the chunk start to t
    C_row = row_ptr(C_ptr, sC_b, sC_g, sC_l, dpg_C, offs_t, BLOCK_D)
    gst = state_base(gst_ptr, d, n, nc) + offs_d
    Ai, Ci = a_col(A_ptr, 0, n, sA_d, sA_n, offs_d, mask_d), bc_row(C_row, 0, n, l, sC_n, offs_t)
    for i in range(n):  # the next state's vectors are loaded while this one computes
        A_nx, C_nx = a_col(A_ptr, i + 1, n, sA_d, sA_n, offs_d, mask_d), bc_row(C_row, i + 1, n, l, sC_n, offs_t)
        w = tl.exp2((Ai * LOG2E)[:, None] * upto) * dy * Ci[None, :]  # (BD, T)
        tl.store(gst + i * d, tl.sum(w, axis=1), mask=mask_d)
        Ai, Ci = A_nx, C_nx


@triton.jit
def _state_loop_bwd(A_ptr, B_row, C_row, st, gst, dB_part, dC_part, dA_part, dt, dt_next, dtu, dy,
                    l, n, d, sA_d, sA_n, sB_n, sC_n, offs_d, offs_t, mask_d,
                    ATOMIC_BC: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr):
    """The loop over states of ``_chunk_bwd``: y, sum_n g (h - x) A and sum_n g B, (BLOCK_D, T) each."""
    first = (tl.arange(0, T) == 0)[None, :]
    last = (tl.arange(0, T) == T - 1)[None, :]
    y = tl.zeros((BLOCK_D, T), tl.float32)
    ghA = tl.zeros((BLOCK_D, T), tl.float32)
    gB = tl.zeros((BLOCK_D, T), tl.float32)
    Ai, Bi = a_col(A_ptr, 0, n, sA_d, sA_n, offs_d, mask_d), bc_row(B_row, 0, n, l, sB_n, offs_t)
    Ci, h0 = bc_row(C_row, 0, n, l, sC_n, offs_t), st_vec(st, 0, n, d, mask_d)  # h0: state entering the chunk
    g_end = st_vec(gst, 0, n, d, mask_d)  # (BD,): d loss / d state leaving the chunk
    for i in range(n):  # the next state's vectors are loaded while this one computes
        A_nx, B_nx = a_col(A_ptr, i + 1, n, sA_d, sA_n, offs_d, mask_d), bc_row(B_row, i + 1, n, l, sB_n, offs_t)
        C_nx, h0_nx = bc_row(C_row, i + 1, n, l, sC_n, offs_t), st_vec(st, i + 1, n, d, mask_d)
        g_end_nx = st_vec(gst, i + 1, n, d, mask_d)
        a = tl.exp2((Ai * LOG2E)[:, None] * dt)  # (BD, T)
        x = dtu * Bi[None, :]
        _, h = tl.associative_scan((a, tl.where(first, x + a * h0[:, None], x)), 1, scan_combine)
        y += h * Ci[None, :]
        a_next = tl.exp2((Ai * LOG2E)[:, None] * dt_next)  # decay from t to t + 1
        c = dy * Ci[None, :]
        _, g = tl.associative_scan((a_next, tl.where(last, c + g_end[:, None], c)), 1, scan_combine, reverse=True)
        gh = g * (h - x)  # g_t a_t h_{t-1}
        ghA += gh * Ai[:, None]
        gB += g * Bi[None, :]
        tl.store(dA_part + i * d + offs_d, tl.sum(gh * dt, axis=1), mask=mask_d)
        _put(dB_part + i * l + offs_t, tl.sum(g * dtu, axis=0), offs_t < l, ATOMIC_BC)
        _put(dC_part + i * l + offs_t, tl.sum(dy * h, axis=0), offs_t < l, ATOMIC_BC)
        Ai, Bi, Ci, h0, g_end = A_nx, B_nx, C_nx, h0_nx, g_end_nx
    return y, ghA, gB


@triton.jit
def _chunk_bwd(dout_ptr, z_ptr, u_ptr, dl_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, st_ptr, gst_ptr,
               du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
               d, l, n, nc, dpg_B, dpg_C, sdo_b, sdo_d, sdo_l, sz_b, sz_d, sz_l, su_b, su_d, su_l,
               sdl_b, sdl_d, sdl_l, sA_d, sA_n, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
               HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
               ATOMIC_BC: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr):
    offs_d, offs_t, mask_d, mask = tile_offsets(d, l, BLOCK_D, T)
    dt, _ = load_dt(dl_ptr, sdl_b, sdl_d, sdl_l, bias_ptr, offs_d, offs_t, mask_d, mask, HAS_BIAS, SOFTPLUS)
    mask_next = mask_d[:, None] & (offs_t + 1 < l)[None, :]
    dt_next, _ = load_dt(dl_ptr, sdl_b, sdl_d, sdl_l, bias_ptr, offs_d, offs_t + 1, mask_d, mask_next,
                          HAS_BIAS, SOFTPLUS)  # (BD, T): dt one position later
    dtu = dt * load_bdl(u_ptr, su_b, su_d, su_l, offs_d, offs_t, mask)  # (BD, T)
    _, dy = _load_dy(dout_ptr, z_ptr, sdo_b, sdo_d, sdo_l, sz_b, sz_d, sz_l, offs_d, offs_t, mask, HAS_Z)
    pid_b, row = tl.program_id(2).to(tl.int64), tl.program_id(2).to(tl.int64) * nc + tl.program_id(1)
    if ATOMIC_BC:  # add into (b, g, n, l): this program's group of B and of C
        part_B = (pid_b * (d // dpg_B) + (tl.program_id(0) * BLOCK_D) // dpg_B) * n * l
        part_C = (pid_b * (d // dpg_C) + (tl.program_id(0) * BLOCK_D) // dpg_C) * n * l
    else:  # this program's own (n, l) slab of (b, d-blocks, n, l)
        part_B = (pid_b * tl.num_programs(0) + tl.program_id(0)) * n * l
        part_C = part_B
    y, ghA, gB = _state_loop_bwd(
        A_ptr, row_ptr(B_ptr, sB_b, sB_g, sB_l, dpg_B, offs_t, BLOCK_D),
        row_ptr(C_ptr, sC_b, sC_g, sC_l, dpg_C, offs_t, BLOCK_D), state_base(st_ptr, d, n, nc) + offs_d,
        state_base(gst_ptr, d, n, nc) + offs_d, dB_ptr + part_B, dC_ptr + part_C, dA_ptr + row * n * d,
        dt, dt_next, dtu, dy, l, n, d, sA_d, sA_n, sB_n, sC_n, offs_d, offs_t, mask_d, ATOMIC_BC, BLOCK_D, T,
    )
    # u, dout, z and d dt / d delta are loaded again rather than held in registers across the loop
    _, dsp = load_dt(dl_ptr, sdl_b, sdl_d, sdl_l, bias_ptr, offs_d, offs_t, mask_d, mask, HAS_BIAS, SOFTPLUS)
    u = load_bdl(u_ptr, su_b, su_d, su_l, offs_d, offs_t, mask)
    Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) if HAS_D else tl.zeros((BLOCK_D,), tl.float32)
    bdl = pid_b * d * l + offs_d.to(tl.int64)[:, None] * l + offs_t[None, :]  # into contiguous (b, d, l)
    if HAS_Z:
        z = load_bdl(z_ptr, sz_b, sz_d, sz_l, offs_d, offs_t, mask)
        sig = 1.0 / (1.0 + tl.exp(-z))
        dout = load_bdl(dout_ptr, sdo_b, sdo_d, sdo_l, offs_d, offs_t, mask)
        dz = dout * (y + Dv[:, None] * u) * sig * (1.0 + z * (1.0 - sig))
        tl.store(dz_ptr + bdl, dz.to(dz_ptr.dtype.element_ty), mask=mask)
    du = dt * gB + Dv[:, None] * dy
    ddelta = tl.where(mask, (ghA + u * gB) * dsp, 0.0)
    tl.store(du_ptr + bdl, du.to(du_ptr.dtype.element_ty), mask=mask)
    tl.store(ddl_ptr + bdl, ddelta.to(ddl_ptr.dtype.element_ty), mask=mask)
    tl.store(dD_ptr + row * d + offs_d, tl.sum(dy * u, axis=1), mask=mask_d)
    tl.store(dbias_ptr + row * d + offs_d, tl.sum(ddelta, axis=1), mask=mask_d)


def _launch_chunk_bwd(saved, dout, states, gstates, p, softplus, block_d):
    """Runs ``_chunk_bwd``; returns du, ddelta, dz and the partial sums."""
    u, delta, A, B, C, D, z, bias = saved
    B4, C4 = (M if M.dim() == 4 else M.unsqueeze(1) for M in (B, C))
    grid = p.grid(block_d)
    f32 = dict(device=u.device, dtype=torch.float32)
    du = torch.empty(p.b, p.d, p.l, device=u.device, dtype=u.dtype)
    ddelta = torch.empty(p.b, p.d, p.l, device=u.device, dtype=delta.dtype)
    dz = torch.empty(p.b, p.d, p.l, device=u.device, dtype=z.dtype) if z is not None else None
    atomic = 2 * p.b * grid[0] * p.n * p.l * 4 > PARTIAL_BC_MAX_BYTES
    if atomic:  # summed in place, (b, g, n, l)
        dB_part, dC_part = torch.zeros(p.b, p.gB, p.n, p.l, **f32), torch.zeros(p.b, p.gC, p.n, p.l, **f32)
    else:  # one slab per channel block, summed here
        dB_part, dC_part = (torch.empty(p.b, grid[0], p.n, p.l, **f32) for _ in range(2))
    dA_part = torch.empty(p.b, p.nc, p.n, p.d, **f32)
    dD_part, dbias_part = (torch.empty(p.b, p.nc, p.d, **f32) for _ in range(2))
    z_ = z if z is not None else u
    _chunk_bwd[grid](
        dout, z_, u, delta, bias if bias is not None else u, A, B4, C4, D if D is not None else u, states, gstates,
        du, ddelta, dz if dz is not None else du, dB_part, dC_part, dA_part, dD_part, dbias_part,
        p.d, p.l, p.n, p.nc, p.dpg_B, p.dpg_C, *dout.stride(), *z_.stride(), *u.stride(),
        *delta.stride(), *A.stride(), *bc_strides(B4), *bc_strides(C4),
        HAS_BIAS=bias is not None, SOFTPLUS=softplus, HAS_D=D is not None, HAS_Z=z is not None,
        ATOMIC_BC=atomic, BLOCK_D=block_d, T=p.T, num_warps=BWD_WARPS,
    )
    return du, ddelta, dz, dB_part, dC_part, dA_part, dD_part, dbias_part


def _group_sum(part: torch.Tensor, M: torch.Tensor, groups: int) -> torch.Tensor:
    """(b, d-blocks, n, l) partials, or sums (b, g, n, l) -> the gradient of B or C, its shape and dtype."""
    b, nblk, n, l = part.shape
    if nblk != groups:
        part = part.view(b, groups, nblk // groups, n, l).sum(2)
    return part.view(M.shape).to(M.dtype)


def scan_bwd(ctx, dout, dlast):
    """Gradients for (u, delta, A, B, C, D, z, delta_bias, initial_state) of ``SelectiveScanFn``."""
    u, delta, A, B, C, D, z, bias, states, dtsum = ctx.saved_tensors
    p, softplus = ctx.plan, ctx.softplus
    u, delta, z = l_contiguous(u), l_contiguous(delta), l_contiguous(z)  # tiles laid out along l
    dout = torch.zeros_like(u) if dout is None else l_contiguous(dout)
    C4 = C if C.dim() == 4 else C.unsqueeze(1)
    gstates = torch.empty_like(states)
    z_ = z if z is not None else u
    _chunk_state_bwd[p.grid(p.block_d)](
        dout, z_, delta, bias if bias is not None else u, A, C4, gstates, p.d, p.l, p.n, p.nc, p.dpg_C,
        *dout.stride(), *z_.stride(), *delta.stride(), *A.stride(), *bc_strides(C4),
        HAS_BIAS=bias is not None, SOFTPLUS=softplus, HAS_Z=z is not None, BLOCK_D=p.block_d, T=p.T, num_warps=4,
    )
    dh0 = torch.empty(p.b, p.d, p.n, device=u.device, dtype=torch.float32) if ctx.has_h0 else None
    carry_states(gstates, dtsum, A, dlast, dh0, p, reverse=True)
    saved = (u, delta, A, B, C, D, z, bias)
    du, ddelta, dz, dB_part, dC_part, dA_part, dD_part, dbias_part = _launch_chunk_bwd(
        saved, dout, states, gstates, p, softplus, p.fit_block_d(BWD_BLOCK_D))
    dA = dA_part.sum((0, 1)).t().to(A.dtype)
    dD = dD_part.sum((0, 1)).to(D.dtype) if D is not None else None
    dbias = dbias_part.sum((0, 1)).to(bias.dtype) if bias is not None else None
    dB, dC = _group_sum(dB_part, B, p.gB), _group_sum(dC_part, C, p.gC)
    dh0 = dh0.to(ctx.h0_dtype) if dh0 is not None else None
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dh0
