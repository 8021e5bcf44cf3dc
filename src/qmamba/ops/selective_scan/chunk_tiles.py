"""Pieces shared by the chunk-parallel forward (``chunk.py``) and backward (``chunk_bwd.py``) of the Mamba-1
scan: the launch plan, the (BLOCK_D, T) tile loaders of a program's channels x chunk, the scan's combine
function, and the carry of states (or state gradients) across chunks.

``chunk_carry`` (grid (cdiv(n d, CARRY_BLOCK), b)) walks the chunks in order (REVERSE: from the last),
h = exp(A dtsum_c) h + end_c, overwriting ``states`` (b, nc, n, d) with what enters each chunk.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qmamba.ops.common.kernel_math import LOG2E, softplus

CHUNK = 64  # T, positions per chunk (forward and backward share it: the saved states are per chunk)
CARRY_BLOCK = 256  # (n, d) states per program of the chunk carry


@triton.jit
def scan_combine(a1, x1, a2, x2):
    """(a1, x1) then (a2, x2): h -> a2 (a1 h + x1) + x2. Reversed scans reuse it (flip semantics)."""
    return a1 * a2, x1 * a2 + x2


@triton.jit
def tile_offsets(d, l, BLOCK_D: tl.constexpr, T: tl.constexpr):
    """Channels (BLOCK_D,), positions (T,), their validity (BLOCK_D,) and (BLOCK_D, T)."""
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_t = tl.program_id(1) * T + tl.arange(0, T)
    mask_d = offs_d < d
    return offs_d, offs_t, mask_d, mask_d[:, None] & (offs_t < l)[None, :]


@triton.jit
def load_bdl(ptr, s_b, s_d, s_l, offs_d, offs_t, mask):
    """A (BLOCK_D, T) fp32 tile of a (b, d, l) tensor of any strides; 0 outside ``mask``."""
    base = ptr + tl.program_id(2).to(tl.int64) * s_b
    offs = offs_d.to(tl.int64)[:, None] * s_d + offs_t.to(tl.int64)[None, :] * s_l
    return tl.load(base + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def load_dt(delta_ptr, s_b, s_d, s_l, bias_ptr, offs_d, offs_t, mask_d, mask,
             HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """dt (BLOCK_D, T), 0 outside ``mask`` (no decay, no input), and d dt / d delta."""
    x = load_bdl(delta_ptr, s_b, s_d, s_l, offs_d, offs_t, mask)
    if HAS_BIAS:
        x += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)[:, None]
    if SOFTPLUS:
        grad = 1.0 / (1.0 + tl.exp(-x))
        x = softplus(x)
    else:
        grad = tl.full(x.shape, 1.0, tl.float32)
    return tl.where(mask, x, 0.0), grad


@triton.jit
def row_ptr(ptr, s_b, s_g, s_l, d_per_group, offs_t, BLOCK_D: tl.constexpr):
    """Pointers (T,) to state 0 of B or C for this program's batch row, group and positions."""
    group = ((tl.program_id(0) * BLOCK_D) // d_per_group).to(tl.int64)
    return ptr + tl.program_id(2).to(tl.int64) * s_b + group * s_g + offs_t.to(tl.int64) * s_l


@triton.jit
def a_col(A_ptr, i, n, sA_d, sA_n, offs_d, mask_d):
    """A[:, i] (BLOCK_D,) in fp32; zeros once i >= n (the prefetch past the last state)."""
    return tl.load(A_ptr + offs_d * sA_d + i * sA_n, mask=mask_d & (offs_d * 0 + i < n), other=0.0).to(tl.float32)


@triton.jit
def bc_row(row, i, n, l, s_n, offs_t):
    """State i of B or C at the chunk's positions (T,) in fp32; zeros past l or once i >= n."""
    return tl.load(row + i * s_n, mask=(offs_t < l) & (offs_t * 0 + i < n), other=0.0).to(tl.float32)


@triton.jit
def st_vec(st, i, n, d, mask_d):
    """State i of this program's channels (BLOCK_D,) from an (n, d) slab; zeros once i >= n."""
    return tl.load(st + i * d, mask=mask_d & (mask_d.to(tl.int32) * 0 + i < n), other=0.0)


@triton.jit
def state_base(ptr, d, n, nc):
    """Start of this program's (n, d) slab in a (b, nc, n, d) state tensor."""
    return ptr + ((tl.program_id(2).to(tl.int64) * nc + tl.program_id(1)) * n) * d


@triton.jit
def chunk_carry(st_ptr, dtsum_ptr, A_ptr, h0_ptr, last_ptr, d, n, nc, sA_d, sA_n,
                 s0_b, s0_d, s0_n, sl_b, sl_d, sl_n, HAS_H0: tl.constexpr, STORE_LAST: tl.constexpr,
                 REVERSE: tl.constexpr, BLOCK: tl.constexpr):
    """In place over states (b, nc, n, d): slot c <- h entering c; h <- exp(A dtsum_c) h + slot c.

    REVERSE walks the chunks from the last (the backward's gradient carry)."""
    pid_b = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # flat (n, d) index
    mask = offs < n * d
    di, ni = offs % d, offs // d
    a2 = tl.load(A_ptr + di * sA_d + ni * sA_n, mask=mask, other=0.0).to(tl.float32) * LOG2E
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


def l_contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t``, or a copy of it contiguous along l."""
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def carry_states(states, dtsum, A, h_in, h_out, p: Plan, reverse: bool) -> None:
    """Chunk-entry states from chunk-end states, in place (reverse: the gradient carry)."""
    dummy = states
    s_in = h_in.stride() if h_in is not None else (0, 0, 0)
    s_out = h_out.stride() if h_out is not None else (0, 0, 0)
    chunk_carry[(triton.cdiv(p.n * p.d, CARRY_BLOCK), p.b)](
        states, dtsum, A, h_in if h_in is not None else dummy, h_out if h_out is not None else dummy,
        p.d, p.n, p.nc, *A.stride(), *s_in, *s_out, HAS_H0=h_in is not None, STORE_LAST=h_out is not None,
        REVERSE=reverse, BLOCK=CARRY_BLOCK, num_warps=4,
    )
