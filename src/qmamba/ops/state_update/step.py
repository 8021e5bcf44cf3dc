"""One-token selective state update (decode step) in Triton; same contract as ``selective_state_update_ref``.

Both forms run as the Mamba-2 form: Mamba-1's state (b, d, n) is viewed as (b, 1, d, n), one head of
headdim d and one group. One program owns a (BLOCK_P, BLOCK_N) tile of one (batch, head) state:

    grid = (cdiv(p, BLOCK_P), b, h)
    state[b, h, p, :] = exp(dt * A) * state + dt * x * B[b, g(h), :]        (fp32 math, stored in state's dtype)
    out[b, h, p]      = <state[b, h, p, :], C[b, g(h), :]> + D * x  (* silu(z))

The op is memory-bound (one read and one write of the state), so the tile is small enough to give
every SM work at batch 1. Every operand is addressed through its strides: Mamba-2 passes A, D, dt
and dt_bias as stride-0 broadcast views of per-head scalars. The launch allocates nothing but the
output (or writes into ``out=``), so it can be captured in a CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from qmamba.ops.common.launch import block_rows
from qmamba.ops.runtime import pdl


@triton.jit
def _state_update_kernel(
    state, x, dt, A, B, C, D, z, dt_bias, out,
    p, n, group_ratio,
    s_b, s_h, s_p, s_n, x_b, x_h, x_p, dt_b, dt_h, dt_p, a_h, a_p, a_n,
    b_b, b_g, b_n, c_b, c_g, c_n, d_h, d_p, z_b, z_h, z_p, bias_h, bias_p, o_b, o_h, o_p,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    A_IS_LOG: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr,
):
    if PDL:  # ops/runtime/pdl.py: the previous kernel's writes are visible from here on; the next one may launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    pid_p, pid_b, pid_h = tl.program_id(0), tl.program_id(1).to(tl.int64), tl.program_id(2)
    pid_g = pid_h // group_ratio
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)  # (BP,)
    offs_n = tl.arange(0, BLOCK_N)  # (BN,)
    mask_p, mask_n = offs_p < p, offs_n < n
    mask = mask_p[:, None] & mask_n[None, :]  # (BP, BN)

    s_ptrs = state + pid_b * s_b + pid_h * s_h + offs_p[:, None] * s_p + offs_n[None, :] * s_n
    S = tl.load(s_ptrs, mask=mask, other=0.0).to(tl.float32)  # (BP, BN)
    xv = tl.load(x + pid_b * x_b + pid_h * x_h + offs_p * x_p, mask=mask_p, other=0.0).to(tl.float32)
    dtv = tl.load(dt + pid_b * dt_b + pid_h * dt_h + offs_p * dt_p, mask=mask_p, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dtv += tl.load(dt_bias + pid_h * bias_h + offs_p * bias_p, mask=mask_p, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dtv = tl.where(dtv > 20.0, dtv, tl.log(1.0 + tl.exp(dtv)))
    Av = tl.load(A + pid_h * a_h + offs_p[:, None] * a_p + offs_n[None, :] * a_n, mask=mask, other=0.0)
    Av = Av.to(tl.float32)
    if A_IS_LOG:
        Av = -tl.exp(Av)
    Bv = tl.load(B + pid_b * b_b + pid_g * b_g + offs_n * b_n, mask=mask_n, other=0.0).to(tl.float32)
    Cv = tl.load(C + pid_b * c_b + pid_g * c_g + offs_n * c_n, mask=mask_n, other=0.0).to(tl.float32)

    S = S * tl.exp(dtv[:, None] * Av) + (dtv * xv)[:, None] * Bv[None, :]
    tl.store(s_ptrs, S.to(state.dtype.element_ty), mask=mask)

    o = tl.sum(S * Cv[None, :], axis=1)  # (BP,)
    if HAS_D:
        o += xv * tl.load(D + pid_h * d_h + offs_p * d_p, mask=mask_p, other=0.0).to(tl.float32)
    if HAS_Z:
        zv = tl.load(z + pid_b * z_b + pid_h * z_h + offs_p * z_p, mask=mask_p, other=0.0).to(tl.float32)
        o *= zv * tl.sigmoid(zv)
    tl.store(out + pid_b * o_b + pid_h * o_h + offs_p * o_p, o.to(out.dtype.element_ty), mask=mask_p)


def _strides(t: Tensor | None, ndim: int) -> tuple[int, ...]:
    return tuple(t.stride()) if t is not None else (0,) * ndim


def selective_state_update(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    A_is_log: bool = False,
    *,
    out: Tensor | None = None,
) -> Tensor:
    """Triton ``selective_state_update_ref``: advances ``state`` in place, returns out shaped like x.
    ``A_is_log``: A holds A_log; -exp(A_log) is taken in the kernel (no separate launches).

    ``out`` (optional) receives the output instead of a fresh tensor. No autograd.
    """
    heads = state.dim() == 4
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if not heads:  # Mamba-1: one head of headdim d, one group (views only: nothing is copied)
        state, x, dt, z, out = (t.unsqueeze(1) if t is not None else None for t in (state, x, dt, z, out))
        A, B, C = A.unsqueeze(0), B.unsqueeze(1), C.unsqueeze(1)
        D, dt_bias = (t.unsqueeze(0) if t is not None else None for t in (D, dt_bias))
    batch, h, p, n = state.shape
    g = B.shape[1]
    n_pad = max(triton.next_power_of_2(n), 2)
    block_p = block_rows(p, n_pad, batch * h, 4096)
    grid = (triton.cdiv(p, block_p), batch, h)
    use_pdl = pdl.enabled(state.device)
    _state_update_kernel[grid](
        state, x, dt, A, B, C, D, z, dt_bias, out,
        p, n, h // g,
        *state.stride(), *x.stride(), *dt.stride(), *A.stride(), *B.stride(), *C.stride(),
        *_strides(D, 2), *_strides(z, 3), *_strides(dt_bias, 2), *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus,
        A_IS_LOG=A_is_log, BLOCK_P=block_p, BLOCK_N=n_pad, PDL=use_pdl,
        num_warps=4 if block_p * n_pad >= 2048 else 2, **pdl.launch_options(use_pdl),
    )
    return out if heads else out.squeeze(1)
