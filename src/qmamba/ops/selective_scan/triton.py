"""Mamba-1 selective scan in Triton: chunk-parallel forward, autograd wrapper, registration.

    dt_t = softplus(delta_t + delta_bias)   (or delta_t + delta_bias)
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t,   y_t = <C_t, h_t> + D u_t,   out_t = y_t silu(z_t)

The sequence is cut into chunks of T positions. A program owns BLOCK_D channels of one chunk of
one batch row, grid (cdiv(d, BLOCK_D), nc, b), holds (BLOCK_D, T) tiles of u, dt, z in registers
(loaded coalesced along l) and loops over the n states, so batch 1 still launches thousands of
programs and nothing of size (b, d, l, n) is ever stored:

1. ``_chunk_state_fwd``: the state each chunk reaches from a zero state, in closed form
   sum_t exp(A (S_end - S_t)) dt_t B_t u_t (S: cumulative dt inside the chunk), and the chunk's
   dt sum.  -> states (b, nc, n, d), dtsum (b, nc, d)
2. ``_chunk_carry`` (grid (cdiv(n d, BLOCK), b)): walks the chunks in order, h = exp(A dtsum_c) h
   + end_c, overwriting ``states`` with the state entering each chunk; writes the last state.
3. ``_chunk_out_fwd``: rescans every chunk from its entry state (tl.associative_scan over T of
   the pairs (exp(dt A), dt B u)) and writes out = (sum_n C h + D u) * silu(z).

The per-state vectors of the n loops (a column of A, rows of B and C, entry states) are loaded
one state ahead. Only the entry states (b, nc, n, d) and dtsum (b, nc, d), both fp32, are kept for
the backward (triton_bwd.py), which recomputes everything inside a chunk.

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

from qmamba.ops import backend
from qmamba.ops.selective_scan.ref import selective_scan_ref

FWD_BLOCK_D, FWD_WARPS = 16, 4  # fwd tiles (BLOCK_D, T) = (16, 64): 8 fp32 per thread, ~96 registers
CHUNK = 64  # T, positions per chunk (forward and backward share it: the saved states are per chunk)
CARRY_BLOCK = 256  # (n, d) states per program of the chunk carry
MAX_STATE = 256
_LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _softplus(x):
    """log(1 + exp(x)), with a series for log1p of small arguments (libdevice-free)."""
    e = tl.exp(-tl.abs(x))
    series = e * (1.0 - e * (0.5 - e * (0.3333333333 - e * (0.25 - e * (0.2 - e * 0.1666666667)))))
    return tl.maximum(x, 0.0) + tl.where(e < 0.1, series, tl.log(1.0 + e))


@triton.jit
def _scan_combine(a1, x1, a2, x2):
    """(a1, x1) then (a2, x2): h -> a2 (a1 h + x1) + x2. Reversed scans reuse it (flip semantics)."""
    return a1 * a2, x1 * a2 + x2


@triton.jit
def _tile_offsets(d, l, BLOCK_D: tl.constexpr, T: tl.constexpr):
    """Channels (BLOCK_D,), positions (T,), their validity (BLOCK_D,) and (BLOCK_D, T)."""
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_t = tl.program_id(1) * T + tl.arange(0, T)
    mask_d = offs_d < d
    return offs_d, offs_t, mask_d, mask_d[:, None] & (offs_t < l)[None, :]


@triton.jit
def _load_bdl(ptr, s_b, s_d, s_l, offs_d, offs_t, mask):
    """A (BLOCK_D, T) fp32 tile of a (b, d, l) tensor of any strides; 0 outside ``mask``."""
    base = ptr + tl.program_id(2).to(tl.int64) * s_b
    offs = offs_d.to(tl.int64)[:, None] * s_d + offs_t.to(tl.int64)[None, :] * s_l
    return tl.load(base + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_dt(delta_ptr, s_b, s_d, s_l, bias_ptr, offs_d, offs_t, mask_d, mask,
             HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """dt (BLOCK_D, T), 0 outside ``mask`` (no decay, no input), and d dt / d delta."""
    x = _load_bdl(delta_ptr, s_b, s_d, s_l, offs_d, offs_t, mask)
    if HAS_BIAS:
        x += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[:, None]
    if SOFTPLUS:
        grad = 1.0 / (1.0 + tl.exp(-x))
        x = _softplus(x)
    else:
        grad = tl.full(x.shape, 1.0, tl.float32)
    return tl.where(mask, x, 0.0), grad


@triton.jit
def _row_ptr(ptr, s_b, s_g, s_l, d_per_group, offs_t, BLOCK_D: tl.constexpr):
    """Pointers (T,) to state 0 of B or C for this program's batch row, group and positions."""
    group = ((tl.program_id(0) * BLOCK_D) // d_per_group).to(tl.int64)
    return ptr + tl.program_id(2).to(tl.int64) * s_b + group * s_g + offs_t.to(tl.int64) * s_l


@triton.jit
def _a_col(A_ptr, i, n, sA_d, sA_n, offs_d, mask_d):
    """A[:, i] (BLOCK_D,) in fp32; zeros once i >= n (the prefetch past the last state)."""
    return tl.load(A_ptr + offs_d * sA_d + i * sA_n, mask=mask_d & (offs_d * 0 + i < n), other=0.0).to(tl.float32)


@triton.jit
def _bc_row(row, i, n, l, s_n, offs_t):
    """State i of B or C at the chunk's positions (T,) in fp32; zeros past l or once i >= n."""
    return tl.load(row + i * s_n, mask=(offs_t < l) & (offs_t * 0 + i < n), other=0.0).to(tl.float32)


@triton.jit
def _st_vec(st, i, n, d, mask_d):
    """State i of this program's channels (BLOCK_D,) from an (n, d) slab; zeros once i >= n."""
    return tl.load(st + i * d, mask=mask_d & (mask_d.to(tl.int32) * 0 + i < n), other=0.0)


@triton.jit
def _state_base(ptr, d, n, nc):
    """Start of this program's (n, d) slab in a (b, nc, n, d) state tensor."""
    return ptr + ((tl.program_id(2).to(tl.int64) * nc + tl.program_id(1)) * n) * d


@triton.jit
def _chunk_state_fwd(u_ptr, dl_ptr, bias_ptr, A_ptr, B_ptr, st_ptr, dtsum_ptr,
                     d, l, n, nc, dpg_B, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sA_d, sA_n, sB_b, sB_g, sB_n, sB_l,
                     HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, T: tl.constexpr):
    offs_d, offs_t, mask_d, mask = _tile_offsets(d, l, BLOCK_D, T)
    dt, _ = _load_dt(dl_ptr, sdl_b, sdl_d, sdl_l, bias_ptr, offs_d, offs_t, mask_d, mask, HAS_BIAS, SOFTPLUS)  # (BD, T)
    dtu = dt * _load_bdl(u_ptr, su_b, su_d, su_l, offs_d, offs_t, mask)  # (BD, T)
    total = tl.sum(dt, axis=1)  # (BD,)
    rest = total[:, None] - tl.cumsum(dt, axis=1)  # (BD, T): dt summed over the later positions
    B_row = _row_ptr(B_ptr, sB_b, sB_g, sB_l, dpg_B, offs_t, BLOCK_D)
    st = _state_base(st_ptr, d, n, nc) + offs_d
    Ai, Bi = _a_col(A_ptr, 0, n, sA_d, sA_n, offs_d, mask_d), _bc_row(B_row, 0, n, l, sB_n, offs_t)
    for i in range(n):  # the next state's vectors are loaded while this one computes
        A_nx, B_nx = _a_col(A_ptr, i + 1, n, sA_d, sA_n, offs_d, mask_d), _bc_row(B_row, i + 1, n, l, sB_n, offs_t)
        w = tl.exp2((Ai * _LOG2E)[:, None] * rest) * dtu * Bi[None, :]  # (BD, T)
        tl.store(st + i * d, tl.sum(w, axis=1), mask=mask_d)
        Ai, Bi = A_nx, B_nx
    row = (tl.program_id(2).to(tl.int64) * nc + tl.program_id(1)) * d
    tl.store(dtsum_ptr + row + offs_d, total, mask=mask_d)


@triton.jit
def _chunk_carry(st_ptr, dtsum_ptr, A_ptr, h0_ptr, last_ptr, d, n, nc, sA_d, sA_n,
                 s0_b, s0_d, s0_n, sl_b, sl_d, sl_n, HAS_H0: tl.constexpr, STORE_LAST: tl.constexpr,
                 REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """In place over states (b, nc, n, d): slot c <- h entering c; h <- exp(A dtsum_c) h + slot c.

    REVERSE walks the chunks from the last (the backward's gradient carry)."""
    pid_b = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # flat (n, d) index
    mask = offs < n * d
    di, ni = offs % d, offs // d
    a2 = tl.load(A_ptr + di * sA_d + ni * sA_n, mask=mask, other=0.0).to(tl.float32) * _LOG2E
    h = tl.zeros((BLOCK,), tl.float32)
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * s0_b + di * s0_d + ni * s0_n, mask=mask, other=0.0).to(tl.float32)
    for k in range(nc):
        c = nc - 1 - k if REVERSE else k
        row = pid_b * nc + c
        end = tl.load(st_ptr + row * n * d + offs, mask=mask, other=0.0)
        total = tl.load(dtsum_ptr + row * d + di, mask=mask, other=0.0)
        tl.store(st_ptr + row * n * d + offs, h, mask=mask)
        h = tl.exp2(a2 * total) * h + end
    if STORE_LAST:
        tl.store(last_ptr + pid_b * sl_b + di * sl_d + ni * sl_n, h, mask=mask)


@triton.jit
def _chunk_out_fwd(u_ptr, dl_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, st_ptr, out_ptr,
                   d, l, n, nc, dpg_B, dpg_C, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l, sA_d, sA_n,
                   sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
                   HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                   BLOCK_D: tl.constexpr, T: tl.constexpr):
    offs_d, offs_t, mask_d, mask = _tile_offsets(d, l, BLOCK_D, T)
    dt, _ = _load_dt(dl_ptr, sdl_b, sdl_d, sdl_l, bias_ptr, offs_d, offs_t, mask_d, mask, HAS_BIAS, SOFTPLUS)  # (BD, T)
    u = _load_bdl(u_ptr, su_b, su_d, su_l, offs_d, offs_t, mask)
    dtu = dt * u
    first = (tl.arange(0, T) == 0)[None, :]
    B_row = _row_ptr(B_ptr, sB_b, sB_g, sB_l, dpg_B, offs_t, BLOCK_D)
    C_row = _row_ptr(C_ptr, sC_b, sC_g, sC_l, dpg_C, offs_t, BLOCK_D)
    st = _state_base(st_ptr, d, n, nc) + offs_d
    y = tl.zeros((BLOCK_D, T), tl.float32)
    Ai, Bi = _a_col(A_ptr, 0, n, sA_d, sA_n, offs_d, mask_d), _bc_row(B_row, 0, n, l, sB_n, offs_t)
    Ci, h0 = _bc_row(C_row, 0, n, l, sC_n, offs_t), _st_vec(st, 0, n, d, mask_d)  # h0: state entering the chunk
    for i in range(n):  # the next state's vectors are loaded while this one computes
        A_nx, B_nx = _a_col(A_ptr, i + 1, n, sA_d, sA_n, offs_d, mask_d), _bc_row(B_row, i + 1, n, l, sB_n, offs_t)
        C_nx, h0_nx = _bc_row(C_row, i + 1, n, l, sC_n, offs_t), _st_vec(st, i + 1, n, d, mask_d)
        a = tl.exp2((Ai * _LOG2E)[:, None] * dt)  # (BD, T)
        x = dtu * Bi[None, :]
        x = tl.where(first, x + a * h0[:, None], x)
        _, h = tl.associative_scan((a, x), 1, _scan_combine)  # (BD, T): the states
        y += h * Ci[None, :]
        Ai, Bi, Ci, h0 = A_nx, B_nx, C_nx, h0_nx
    if HAS_D:
        y += u * tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[:, None]
    if HAS_Z:
        z = _load_bdl(z_ptr, sz_b, sz_d, sz_l, offs_d, offs_t, mask)
        y *= z / (1.0 + tl.exp(-z))
    out = out_ptr + tl.program_id(2).to(tl.int64) * d * l + offs_d.to(tl.int64)[:, None] * l + offs_t[None, :]
    tl.store(out, y.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- host side


class Plan:
    """Sizes and block choices shared by the forward and the backward launches."""

    def __init__(self, u, A, B4, C4, chunk_size, block_d):
        self.b, self.d, self.l = u.shape
        self.n = A.shape[1]
        self.gB, self.gC = B4.shape[1], C4.shape[1]
        self.dpg_B, self.dpg_C = self.d // self.gB, self.d // self.gC  # channels per group
        want = chunk_size if chunk_size and 4 <= chunk_size <= 256 and chunk_size & (chunk_size - 1) == 0 else CHUNK
        self.T = min(want, max(4, triton.next_power_of_2(self.l)))
        self.nc = triton.cdiv(self.l, self.T)
        self.block_d = self.fit_block_d(block_d)

    def fit_block_d(self, want: int) -> int:
        """Power of two <= want; it must divide the channels of a group when there are groups."""
        bd = min(want, triton.next_power_of_2(self.d))
        for g, per in ((self.gB, self.dpg_B), (self.gC, self.dpg_C)):
            if g > 1:
                bd = min(bd, per & -per)
        return bd

    def grid(self, block_d: int) -> tuple[int, int, int]:
        return triton.cdiv(self.d, block_d), self.nc, self.b


def bc_strides(M: torch.Tensor) -> tuple[int, int, int, int]:
    """(b, g, n, l) strides of B or C given as (b, g, n, l) or (b, n, l)."""
    return tuple(M.stride()) if M.dim() == 4 else (M.stride(0), 0, M.stride(1), M.stride(2))


def l_contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t``, or a copy of it contiguous along l."""
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


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


def carry_states(states, dtsum, A, h_in, h_out, p: Plan, reverse: bool) -> None:
    """Chunk-entry states from chunk-end states, in place (reverse: the gradient carry)."""
    dummy = states
    s_in = h_in.stride() if h_in is not None else (0, 0, 0)
    s_out = h_out.stride() if h_out is not None else (0, 0, 0)
    _chunk_carry[(triton.cdiv(p.n * p.d, CARRY_BLOCK), p.b)](
        states, dtsum, A, h_in if h_in is not None else dummy, h_out if h_out is not None else dummy,
        p.d, p.n, p.nc, *A.stride(), *s_in, *s_out, HAS_H0=h_in is not None, STORE_LAST=h_out is not None,
        REVERSE=reverse, BLOCK=CARRY_BLOCK, num_warps=4,
    )


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
        from qmamba.ops.selective_scan.triton_bwd import scan_bwd

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
    from qmamba.ops.selective_scan.triton_sequential import scan_sequential, use_sequential

    if use_sequential(u, A.shape[1], delta, A, B, C, D, z, delta_bias, initial_state):  # inference, many rows
        B4, C4 = (M if M.dim() == 4 else M.unsqueeze(1) for M in (B, C))
        h0 = initial_state.float() if initial_state is not None else None
        out, last = scan_sequential(u, delta, A, B4, C4, D, z, delta_bias, h0, bool(delta_softplus))
    else:
        out, last = SelectiveScanFn.apply(
            u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus), chunk_size)
    return (out, last) if return_last_state else out


backend.register("selective_scan", "triton", selective_scan_triton, devices=("cuda",))
