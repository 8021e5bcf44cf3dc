"""Mamba-1's decode step after x_proj as one Triton kernel; same contract as ``mamba1_decode_ssm_ref``.

One program owns BLOCK_D channels of one batch row:

    grid = (cdiv(d, BLOCK_D), b)
    dt[c]       = softplus(<dt_weight[c, :], dt_low[b, :]> + dt_bias[c])          (fp32, r in BLOCK_R steps)
    state[b, c] = exp(-exp(A_log[c]) * dt[c]) * state[b, c] + dt[c] * x[b, c] * B[b]
    out[b, c]   = (<state[b, c], C[b]> + D[c] * x[b, c]) * silu(z[b, c])

In the unfused step dt_proj, -exp(A_log), the casts of D and dt_bias and the state update are five to seven
launches per layer; at batch 1 each costs more than its work. dt_proj's weight (d x r) is read once per
batch row (from L2 after the first). x_proj's output is read through its strides (dt_low, B and C are views
of one (b, r + 2n) tensor). Nothing is allocated but the output, so the launch can be captured in a CUDA graph.

With PDL the parameters, dt_proj's tile and (when dt_proj is one tile) the state are loaded before the wait
on the previous kernel: the state must not be written by a kernel launched since this op last ran on it (a
decode step writes it here only; a reset or copy between steps is an ordinary launch, which completes before
this one starts).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from qmamba.ops import backend, pdl
from qmamba.ops.state_update.triton import block_rows


@triton.jit
def _mamba1_decode_kernel(
    state, x, dt_low, dt_w, dt_bias, A_log, B, C, D, z, out,
    d, n, r,
    s_b, s_d, s_n, x_b, x_d, lo_b, lo_r, w_d, w_r, a_d, a_n, b_b, b_n, c_b, c_n, z_b, z_d, o_b, o_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr, ONE_TILE: tl.constexpr, PDL: tl.constexpr,
):
    pid_d, pid_b = tl.program_id(0), tl.program_id(1).to(tl.int64)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    offs_n = tl.arange(0, BLOCK_N)  # (BN,)
    mask_d, mask_n = offs_d < d, offs_n < n
    mask = mask_d[:, None] & mask_n[None, :]  # (BD, BN)
    # the parameters first, before the PDL wait: no kernel of the step writes them
    A = -tl.exp(tl.load(A_log + offs_d[:, None] * a_d + offs_n[None, :] * a_n, mask=mask, other=0.0).to(tl.float32))
    dtv = tl.load(dt_bias + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if ONE_TILE:  # dt_proj's rows of these channels in one (BD, BR) tile
        offs_r = tl.arange(0, BLOCK_R)
        w1 = tl.load(dt_w + offs_d[:, None] * w_d + offs_r[None, :] * w_r,
                     mask=mask_d[:, None] & (offs_r < r)[None, :], other=0.0).to(tl.float32)
    # the state too: only this kernel writes it, in the layer's previous step, long finished (with dt_proj
    # in steps the state would stay in registers across the loop: loaded after it)
    s_ptrs = state + pid_b * s_b + offs_d[:, None] * s_d + offs_n[None, :] * s_n
    if ONE_TILE:
        S = tl.load(s_ptrs, mask=mask, other=0.0).to(tl.float32)  # (BD, BN)
    if PDL:  # ops/pdl.py: the previous kernel's writes are visible from here on; the next one may launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()

    if ONE_TILE:
        lo = tl.load(dt_low + pid_b * lo_b + offs_r * lo_r, mask=offs_r < r, other=0.0).to(tl.float32)  # (BR,)
        dtv += tl.sum(w1 * lo[None, :], axis=1)
    else:  # dt_proj, r in steps of BLOCK_R
        for r0 in range(0, r, BLOCK_R):
            offs_r = r0 + tl.arange(0, BLOCK_R)
            mask_r = offs_r < r
            lo = tl.load(dt_low + pid_b * lo_b + offs_r * lo_r, mask=mask_r, other=0.0).to(tl.float32)  # (BR,)
            w = tl.load(dt_w + offs_d[:, None] * w_d + offs_r[None, :] * w_r,
                        mask=mask_d[:, None] & mask_r[None, :], other=0.0).to(tl.float32)  # (BD, BR)
            dtv += tl.sum(w * lo[None, :], axis=1)
    dtv = tl.where(dtv > 20.0, dtv, tl.log(1.0 + tl.exp(dtv)))  # softplus
    if not ONE_TILE:
        S = tl.load(s_ptrs, mask=mask, other=0.0).to(tl.float32)  # (BD, BN)

    xv = tl.load(x + pid_b * x_b + offs_d * x_d, mask=mask_d, other=0.0).to(tl.float32)
    Bv = tl.load(B + pid_b * b_b + offs_n * b_n, mask=mask_n, other=0.0).to(tl.float32)
    Cv = tl.load(C + pid_b * c_b + offs_n * c_n, mask=mask_n, other=0.0).to(tl.float32)

    S = S * tl.exp(dtv[:, None] * A) + (dtv * xv)[:, None] * Bv[None, :]
    tl.store(s_ptrs, S.to(state.dtype.element_ty), mask=mask)

    o = tl.sum(S * Cv[None, :], axis=1)  # (BD,)
    if HAS_D:
        o += xv * Dv
    if HAS_Z:
        zv = tl.load(z + pid_b * z_b + offs_d * z_d, mask=mask_d, other=0.0).to(tl.float32)
        o *= zv * tl.sigmoid(zv)
    tl.store(out + pid_b * o_b + offs_d * o_d, o.to(out.dtype.element_ty), mask=mask_d)


def mamba1_decode_ssm(
    state: Tensor,
    x: Tensor,
    dt_low: Tensor,
    dt_weight: Tensor,
    dt_bias: Tensor,
    A_log: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    *,
    out: Tensor | None = None,
) -> Tensor:
    """Triton ``mamba1_decode_ssm_ref``: advances ``state`` (b, d, n) in place, returns out (b, d). No autograd."""
    batch, d, n = state.shape
    r = dt_weight.shape[1]
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    z_strides = tuple(z.stride()) if z is not None else (0, 0)
    use_pdl = pdl.enabled(state.device)
    cfg = decode_config(batch, d, n, r)
    _mamba1_decode_kernel[(triton.cdiv(d, cfg["BLOCK_D"]), batch)](
        state, x, dt_low, dt_weight, dt_bias, A_log, B, C, D, z, out,
        d, n, r,
        *state.stride(), *x.stride(), *dt_low.stride(), *dt_weight.stride(), *A_log.stride(),
        *B.stride(), *C.stride(), *z_strides, *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None, PDL=use_pdl, **cfg, **pdl.launch_options(use_pdl),
    )
    return out


def decode_config(batch: int, d: int, n: int, r: int) -> dict:
    """Tiles and warps of ``_mamba1_decode_kernel`` for a (batch, d, n) state and dt_rank r."""
    n_pad = max(triton.next_power_of_2(n), 2)
    block_d = block_rows(d, n_pad, batch, 2048)
    # dt_proj: one tile of at most 4096 weights, else steps of 2048 (batch 16, (128, 64) steps: 255 registers
    # and 480 bytes spilled a thread on sm_90; (128, 16): 138, none)
    block_r = max(triton.next_power_of_2(r), 2)
    block_r = block_r if block_r * block_d <= 4096 else max(16, 2048 // block_d)
    return {"BLOCK_D": block_d, "BLOCK_N": n_pad, "BLOCK_R": block_r, "ONE_TILE": block_r >= r,
            "num_warps": 4 if block_d * n_pad >= 1024 else 2}


backend.register("mamba1_decode_ssm", "triton", mamba1_decode_ssm, devices=("cuda",))
