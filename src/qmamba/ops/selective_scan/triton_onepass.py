"""Mamba-1 selective scan forward in one pass, for inference on many rows (a batched prefill).

The chunk-parallel forward of ``triton.py`` launches (channel blocks x chunks x rows) programs and spends
three kernels on it: every chunk's end state from zero, the carry across chunks, and the rescan that writes
the output. Once rows x channel blocks alone fill the GPU (64 prompts of 2.8B: 20,480 programs) the first two
are overhead. Here a program owns BLOCK_D channels of one row, grid (cdiv(d, BLOCK_D), 1, b), and walks the
chunks in order: each chunk is ``_chunk_out_fwd``'s rescan from the state the previous chunk left, and the
state at the chunk's last position is written back for the next. The running state lives in ``last``
(b, d, n) fp32, which ends as the final state; a barrier per chunk makes the writes of one chunk visible to
the threads reading them in the next.

Forward only, nothing saved: ``selective_scan_triton`` takes it when no input needs a gradient and the
rows fill the GPU (``use_onepass``). Same rounding as the chunked forward at equal chunk size.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qmamba.ops.selective_scan.triton import (
    _LOG2E,
    FWD_BLOCK_D,
    FWD_WARPS,
    Plan,
    _a_col,
    _bc_row,
    _load_bdl,
    _load_dt,
    _row_ptr,
    _scan_combine,
    bc_strides,
)

MIN_PROGRAMS = 2048  # rows x channel blocks from which the one-pass forward is taken


@triton.jit
def _onepass_fwd(u_ptr, dl_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, last_ptr, out_ptr,
                 d, l, n, nc, dpg_B, dpg_C, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l, sA_d, sA_n,
                 sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
                 HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                 BLOCK_D: tl.constexpr, T: tl.constexpr):
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < d
    state = last_ptr + tl.program_id(2).to(tl.int64) * d * n + offs_d.to(tl.int64) * n  # (BLOCK_D,) state 0
    first = (tl.arange(0, T) == 0)[None, :]
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    for ch in range(nc):
        offs_t = ch * T + tl.arange(0, T)
        mask = mask_d[:, None] & (offs_t < l)[None, :]
        is_end = (offs_t == tl.minimum(l, ch * T + T) - 1)[None, :]  # the chunk's last position
        dt, _ = _load_dt(dl_ptr, sdl_b, sdl_d, sdl_l, bias_ptr, offs_d, offs_t, mask_d, mask, HAS_BIAS, SOFTPLUS)
        u = _load_bdl(u_ptr, su_b, su_d, su_l, offs_d, offs_t, mask)  # (BD, T)
        dtu = dt * u
        B_row = _row_ptr(B_ptr, sB_b, sB_g, sB_l, dpg_B, offs_t, BLOCK_D)
        C_row = _row_ptr(C_ptr, sC_b, sC_g, sC_l, dpg_C, offs_t, BLOCK_D)
        y = tl.zeros((BLOCK_D, T), tl.float32)
        for i in range(n):
            Ai = _a_col(A_ptr, i, n, sA_d, sA_n, offs_d, mask_d)
            Bi, Ci = _bc_row(B_row, i, n, l, sB_n, offs_t), _bc_row(C_row, i, n, l, sC_n, offs_t)
            h0 = tl.load(state + i, mask=mask_d, other=0.0)  # state i entering the chunk
            a = tl.exp2((Ai * _LOG2E)[:, None] * dt)  # (BD, T)
            x = tl.where(first, dtu * Bi[None, :] + a * h0[:, None], dtu * Bi[None, :])
            _, h = tl.associative_scan((a, x), 1, _scan_combine)  # (BD, T)
            y += h * Ci[None, :]
            tl.store(state + i, tl.sum(tl.where(is_end, h, 0.0), axis=1), mask=mask_d)
        tl.debug_barrier()  # this chunk's end states, stored by some threads, are read by others next chunk
        if HAS_D:
            y += u * Dv[:, None]
        if HAS_Z:
            z = _load_bdl(z_ptr, sz_b, sz_d, sz_l, offs_d, offs_t, mask)
            y *= z / (1.0 + tl.exp(-z))
        out = out_ptr + tl.program_id(2).to(tl.int64) * d * l + offs_d.to(tl.int64)[:, None] * l + offs_t[None, :]
        tl.store(out, y.to(out_ptr.dtype.element_ty), mask=mask)


def use_onepass(u: torch.Tensor, *tensors) -> bool:
    """Inference (no input needs a gradient) on enough rows x channel blocks to fill the GPU."""
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, *tensors))
    return not needs_grad and u.shape[0] * triton.cdiv(u.shape[1], FWD_BLOCK_D) >= MIN_PROGRAMS


def scan_onepass(u, delta, A, B4, C4, D, z, bias, h0, softplus: bool, p: Plan):
    """out (b, d, l), last state (b, d, n) fp32; arguments as ``triton._scan_fwd``."""
    out = torch.empty(p.b, p.d, p.l, device=u.device, dtype=u.dtype)
    last = torch.zeros(p.b, p.d, p.n, device=u.device, dtype=torch.float32)
    if h0 is not None:
        last.copy_(h0)
    bias_, z_ = (bias if bias is not None else u), (z if z is not None else u)
    _onepass_fwd[(triton.cdiv(p.d, p.block_d), 1, p.b)](
        u, delta, bias_, A, B4, C4, D if D is not None else u, z_, last, out, p.d, p.l, p.n, p.nc, p.dpg_B,
        p.dpg_C, *u.stride(), *delta.stride(), *z_.stride(), *A.stride(), *bc_strides(B4), *bc_strides(C4),
        HAS_BIAS=bias is not None, SOFTPLUS=softplus, HAS_D=D is not None, HAS_Z=z is not None,
        BLOCK_D=p.block_d, T=p.T, num_warps=FWD_WARPS,
    )
    return out, last
