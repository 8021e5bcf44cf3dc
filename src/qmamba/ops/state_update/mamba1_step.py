"""Mamba-1's decode step after x_proj as one Triton kernel; same contract as ``mamba1_decode_ssm_ref``.

One row (``_mamba1_decode_kernel``): a program owns BLOCK_D channels of one batch row:

    grid = (cdiv(d, BLOCK_D), b)
    dt[c]       = softplus(<dt_weight[c, :], dt_low[b, :]> + dt_bias[c])          (fp32, r in BLOCK_R steps)
    state[b, c] = exp(-exp(A_log[c]) * dt[c]) * state[b, c] + dt[c] * x[b, c] * B[b]
    out[b, c]   = (<state[b, c], C[b]> + D[c] * x[b, c]) * silu(z[b, c])

Several rows (``_mamba1_decode_rows_kernel``, from ``ROWS_FROM`` rows): a program owns BLOCK_D channels of
16 rows, so dt_proj is one tensor-core dot (16, r) x (r, BLOCK_D) per program and its weight tile is read
once for all of them, not once a row; the state is a (16, BLOCK_D, n) block:

    grid = (cdiv(d, BLOCK_D), cdiv(b, 16))

In the unfused step dt_proj, -exp(A_log), the casts of D and dt_bias and the state update are five to seven
launches per layer; at batch 1 each costs more than its work. The one-row kernel reads dt_proj's weight
(d x r) once per batch row (from L2 after the first), the rows kernel once per 16 rows. x_proj's output is
read through its strides (dt_low, B and C are views of one (b, r + 2n) tensor). Nothing is allocated but the
output, so the launch can be captured in a CUDA graph.

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

from qmamba.ops import backend
from qmamba.ops.common.launch import block_rows
from qmamba.ops.runtime import pdl


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
    if PDL:  # ops/runtime/pdl.py: the previous kernel's writes are visible from here on; the next one may launch
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


@triton.jit
def _mamba1_decode_rows_kernel(
    state, x, dt_low, dt_w, dt_bias, A_log, B, C, D, z, out,
    batch, d, n, r,
    s_b, s_d, s_n, x_b, x_d, lo_b, lo_r, w_d, w_r, a_d, a_n, b_b, b_n, c_b, c_n, z_b, z_d, o_b, o_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, ONE_TILE: tl.constexpr, DOT_F32: tl.constexpr,
    PDL: tl.constexpr,
):
    pid_d, pid_m = tl.program_id(0), tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,) batch rows
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BD,)
    offs_n = tl.arange(0, BLOCK_N)  # (BN,)
    mask_m, mask_d, mask_n = offs_m < batch, offs_d < d, offs_n < n
    rows = offs_m.to(tl.int64)
    # before the PDL wait: the parameters, dt_proj's weight when it is one tile, and the state (written by
    # this kernel only, in the layer's previous step)
    A = -tl.exp(tl.load(A_log + offs_d[:, None] * a_d + offs_n[None, :] * a_n,
                        mask=mask_d[:, None] & mask_n[None, :], other=0.0).to(tl.float32))  # (BD, BN)
    bias = tl.load(dt_bias + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # (BD,)
    if HAS_D:
        Dv = tl.load(D + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    offs_r = tl.arange(0, BLOCK_R)
    if ONE_TILE:
        w1 = tl.load(dt_w + offs_r[:, None] * w_r + offs_d[None, :] * w_d,
                     mask=(offs_r < r)[:, None] & mask_d[None, :], other=0.0)  # (BR, BD): dt_proj^T
    s_ptrs = state + rows[:, None, None] * s_b + offs_d[None, :, None] * s_d + offs_n[None, None, :] * s_n
    mask3 = mask_m[:, None, None] & mask_d[None, :, None] & mask_n[None, None, :]  # (BM, BD, BN)
    S = tl.load(s_ptrs, mask=mask3, other=0.0).to(tl.float32)
    if PDL:  # ops/runtime/pdl.py: the previous kernel's writes are visible from here on; the next one may launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()

    dt = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for r0 in range(0, r, BLOCK_R):  # one step when ONE_TILE
        mask_r = r0 + offs_r < r
        lo = tl.load(dt_low + rows[:, None] * lo_b + (r0 + offs_r)[None, :] * lo_r,
                     mask=mask_m[:, None] & mask_r[None, :], other=0.0)  # (BM, BR)
        if ONE_TILE:
            w = w1
        else:
            w = tl.load(dt_w + (r0 + offs_r)[:, None] * w_r + offs_d[None, :] * w_d,
                        mask=mask_r[:, None] & mask_d[None, :], other=0.0)
        if DOT_F32:
            dt += tl.dot(lo.to(tl.float32), w.to(tl.float32), input_precision="ieee")
        else:
            dt += tl.dot(lo, w)
    dt += bias[None, :]
    dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(dt)))  # softplus, (BM, BD)

    mask2 = mask_m[:, None] & mask_d[None, :]
    xv = tl.load(x + rows[:, None] * x_b + offs_d[None, :] * x_d, mask=mask2, other=0.0).to(tl.float32)
    mask_bn = mask_m[:, None] & mask_n[None, :]
    Bv = tl.load(B + rows[:, None] * b_b + offs_n[None, :] * b_n, mask=mask_bn, other=0.0).to(tl.float32)
    Cv = tl.load(C + rows[:, None] * c_b + offs_n[None, :] * c_n, mask=mask_bn, other=0.0).to(tl.float32)

    S = S * tl.exp(dt[:, :, None] * A[None, :, :]) + (dt * xv)[:, :, None] * Bv[:, None, :]
    tl.store(s_ptrs, S.to(state.dtype.element_ty), mask=mask3)

    o = tl.sum(S * Cv[:, None, :], axis=2)  # (BM, BD)
    if HAS_D:
        o += xv * Dv[None, :]
    if HAS_Z:
        zv = tl.load(z + rows[:, None] * z_b + offs_d[None, :] * z_d, mask=mask2, other=0.0).to(tl.float32)
        o *= zv * tl.sigmoid(zv)
    tl.store(out + rows[:, None] * o_b + offs_d[None, :] * o_d, o.to(out.dtype.element_ty), mask=mask2)


ROWS_FROM = 2  # batches of this many rows and more take the rows kernel (chosen by benchmarks/decode_ssm.py)
ROW_BLOCK = 16  # BLOCK_M of the rows kernel: the rows of a tensor-core dot


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
    config: dict | None = None,
) -> Tensor:
    """Triton ``mamba1_decode_ssm_ref``: advances ``state`` (b, d, n) in place, returns out (b, d). No autograd.
    ``config`` forces a kernel and its tiles (``decode_config``'s or ``rows_config``'s keys; benchmarks)."""
    batch, d, n = state.shape
    r = dt_weight.shape[1]
    if out is None:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    z_strides = tuple(z.stride()) if z is not None else (0, 0)
    use_pdl = pdl.enabled(state.device)
    operands = (state, x, dt_low, dt_weight, dt_bias, A_log, B, C, D, z, out)
    strides = (*state.stride(), *x.stride(), *dt_low.stride(), *dt_weight.stride(), *A_log.stride(),
               *B.stride(), *C.stride(), *z_strides, *out.stride())
    flags = {"HAS_D": D is not None, "HAS_Z": z is not None, "PDL": use_pdl, **pdl.launch_options(use_pdl)}
    cfg = config or (rows_config(batch, d, n, r) if batch >= ROWS_FROM else decode_config(batch, d, n, r))
    if "BLOCK_M" in cfg:
        # fp32 products for fp32 or mixed operands, and in Triton's interpreter (its bf16 tl.dot is wrong; bf16
        # values are exact in fp32, so the sum is the same)
        dot_f32 = (torch.float32 in (dt_low.dtype, dt_weight.dtype) or dt_low.dtype != dt_weight.dtype
                   or backend.triton_interpreted())
        grid = (triton.cdiv(d, cfg["BLOCK_D"]), triton.cdiv(batch, cfg["BLOCK_M"]))
        _mamba1_decode_rows_kernel[grid](*operands, batch, d, n, r, *strides, DOT_F32=dot_f32, **flags, **cfg)
    else:
        _mamba1_decode_kernel[(triton.cdiv(d, cfg["BLOCK_D"]), batch)](*operands, d, n, r, *strides, **flags, **cfg)
    return out


def decode_config(batch: int, d: int, n: int, r: int) -> dict:
    """Tiles and warps of ``_mamba1_decode_kernel`` for a (batch, d, n) state and dt_rank r."""
    n_pad = max(triton.next_power_of_2(n), 2)
    block_d = block_rows(d, n_pad, batch, 2048)
    # dt_proj: one tile of at most 4096 weights, else steps of 2048 (wider steps spill at batch 16)
    block_r = max(triton.next_power_of_2(r), 2)
    block_r = block_r if block_r * block_d <= 4096 else max(16, 2048 // block_d)
    return {"BLOCK_D": block_d, "BLOCK_N": n_pad, "BLOCK_R": block_r, "ONE_TILE": block_r >= r,
            "num_warps": 4 if block_d * n_pad >= 1024 else 2}


def rows_config(batch: int, d: int, n: int, r: int) -> dict:
    """Tiles and warps of ``_mamba1_decode_rows_kernel``: 16 channels (the dot's N) of 16 rows, 4 warps,
    dt_proj's weight in one tile of at most 2048 weights, else 64-wide steps. Chosen by
    ``benchmarks/decode_ssm.py`` among (16 or 32 channels, 4 or 8 warps, r in 64-wide steps or one tile)."""
    n_pad = max(triton.next_power_of_2(n), 2)
    block_r = max(triton.next_power_of_2(r), 16)
    block_r = block_r if block_r * 16 <= 2048 else 64
    return {"BLOCK_M": ROW_BLOCK, "BLOCK_D": 16, "BLOCK_N": n_pad, "BLOCK_R": block_r, "ONE_TILE": block_r >= r,
            "num_warps": 4}

