"""Mamba-2 SSD scan, chunk-parallel, in Triton; same contract as ``ssd_chunk_scan_ref`` (forward and gradients).

Shapes: x, z, y (b, l, h, p); dt (b, l, h); A (h,); B, C (b, l, g, n); D (h,) or (h, p); dt_bias (h,);
initial / final states (b, h, p, n). Chunks of T = chunk_size steps, nc = cdiv(l, T) of them.

Forward, two launches (kernels in ``chunk_fwd.py``):
  1. ``states_kernel`` (b * h, n blocks): dt processing + in-chunk cumsum of dt * A (written for the
     other kernels), then the chunk states and the state passing in one sequential sweep over chunks.
  2. ``output_kernel`` (b * h, nc, T / BLOCK_T): intra-chunk (C B^T masked by the decay) @ (x dt)
     plus the inter-chunk C @ entry state, D and the z gate.
Backward, four launches (``chunk_bwd.py``): the states are recomputed by (1), then
  3. ``dstates_kernel`` passes the state gradient backward over the chunks,
  4. ``chunk_bwd_kernel`` (b * h, nc, T / BLOCK_T) gives dx, dz, per-head dB / dC, d(dt) through x dt,
     and d cum per row,
  5. ``ddt_kernel`` (b * h, nc) turns d cum into d dt and dA and goes back through softplus and dt_bias,
and a few torch reductions sum the per-head dB / dC over each group and the partial dA / dD / d dt_bias.

Precision: with bf16 / fp16 inputs the dots take bf16 / fp16 operands with fp32 accumulation, except
where a rounded operand would feed a cancelling difference in d cum (the chunk-state sum, the
state-gradient and entry-state products): there the fp32 operand is split into a rounded part and
its rounding error, two dots. d cum's intra-chunk terms are exact row / column sums of the decayed
products, with the diagonal (which cancels) left out.

Supported: chunk_size a power of two in [16, 256], headdim <= 128, d_state <= 256, fp32 / bf16 / fp16
inputs. Anything else (or nheads not a multiple of ngroups) falls back to ``ssd_chunk_scan_ref``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from qmamba.ops import backend
from qmamba.ops.ssd.chunk_bwd import chunk_bwd_kernel, ddt_kernel, dstates_kernel
from qmamba.ops.ssd.chunk_fwd import output_kernel, states_kernel
from qmamba.ops.ssd.chunked import ssd_chunk_scan_ref

_DOT = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}

# (rows a block, warps) of a kernel ("states", "out", "bwd") in place of _Cfg's choice, for sweeps
# (`benchmarks/kernels.py --ssd-tiles`, which chose the defaults; the spills they allow are listed in
# tests/ops/test_kernel_resources.py)
TILES: dict[str, tuple[int, int]] = {}


def _supported(x: Tensor, B: Tensor, chunk_size: int) -> bool:
    T, p, (g, n), h = chunk_size, x.shape[-1], B.shape[2:], x.shape[2]
    return (16 <= T <= 256 and T & (T - 1) == 0 and p <= 128 and n <= 256 and h % g == 0
            and x.dtype in _DOT and x.shape[1] > 0)


class _Cfg:
    """Shapes, tile sizes and dot settings of one call."""

    def __init__(self, x: Tensor, B: Tensor, chunk_size: int, dt_limit: tuple[float, float]):
        self.b, self.l, self.h, self.p = x.shape
        self.g, self.n = B.shape[2], B.shape[3]
        self.T = chunk_size
        self.nc = triton.cdiv(self.l, self.T)
        self.BP, self.BN = max(16, triton.next_power_of_2(self.p)), max(16, triton.next_power_of_2(self.n))
        # (rows a block, warps) per kernel; smaller row blocks where many fp32 tiles are live at once
        big = max(self.BP, self.BN) > 128 or x.dtype == torch.float32
        self.tiles = {"states": (32 if big else 64, 8), "out": (32 if big else 64, 8), "bwd": (32, 8)}
        self.tiles.update(TILES)
        self.tiles = {k: (min(self.T, bt), w) for k, (bt, w) in self.tiles.items()}
        self.BN_state = min(self.BN, 32)  # the sequential kernels split the state columns over programs
        self.nnb = triton.cdiv(self.n, self.BN_state)
        self.dot = {"DOT": _DOT[x.dtype], "PREC": "ieee" if x.dtype == torch.float32 else "tf32",
                    "EMU": x.dtype != torch.float32 and backend.triton_interpreted()}
        lo, hi = dt_limit
        self.clamp = lo > 0.0 or hi < float("inf")
        self.lo, self.hi = (float(lo), float(min(hi, 3.0e38))) if self.clamp else (0.0, 0.0)


def _run_states(cfg: _Cfg, x, dt, A, B, dt_bias, init, softplus):
    """Kernel 1: dt / cum buffers (b, h, nc * T), entry states (b, nc, h, p, n) and final states, fp32."""
    f32 = {"dtype": torch.float32, "device": x.device}
    dt_buf = torch.empty(cfg.b, cfg.h, cfg.nc * cfg.T, **f32)
    cum_buf = torch.empty_like(dt_buf)
    states = torch.empty(cfg.b, cfg.nc, cfg.h, cfg.p, cfg.n, **f32)
    final = torch.empty(cfg.b, cfg.h, cfg.p, cfg.n, **f32)
    init_strides = init.stride() if init is not None else (0, 0, 0, 0)
    states_kernel[(cfg.b * cfg.h, cfg.nnb)](
        x, dt, A, B, dt_bias if dt_bias is not None else A, init if init is not None else x,
        dt_buf, cum_buf, states, final,
        cfg.l, cfg.h, cfg.p, cfg.n, cfg.nc, cfg.h // cfg.g, cfg.lo, cfg.hi,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3), *dt.stride(), *B.stride(), *init_strides,
        HAS_BIAS=dt_bias is not None, SOFTPLUS=softplus, CLAMP=cfg.clamp, HAS_INIT=init is not None,
        T=cfg.T, BLOCK_T=cfg.tiles["states"][0], BLOCK_P=cfg.BP, BLOCK_N=cfg.BN_state, **cfg.dot,
        num_warps=cfg.tiles["states"][1],
    )
    return dt_buf, cum_buf, states, final


def _d_strides(D: Tensor | None) -> tuple[int, int]:
    if D is None:
        return 0, 0
    return (D.stride(0), 0) if D.dim() == 1 else (D.stride(0), D.stride(1))


def _forward(cfg: _Cfg, x, dt, A, B, C, D, z, dt_bias, init, softplus):
    """Kernels 1 and 2; returns y, y before the z gate (None without z), final states and kernel 1's buffers."""
    dt_buf, cum_buf, states, final = _run_states(cfg, x, dt, A, B, dt_bias, init, softplus)
    out = torch.empty(cfg.b, cfg.l, cfg.h, cfg.p, dtype=x.dtype, device=x.device)
    out_x = torch.empty_like(out) if z is not None else None
    z_strides = z.stride() if z is not None else (0, 0, 0, 0)
    bt, warps = cfg.tiles["out"]
    grid = (cfg.b * cfg.h, cfg.nc, cfg.T // bt)
    output_kernel[grid](
        x, B, C, D if D is not None else x, z if z is not None else x, dt_buf, cum_buf, states, out,
        out_x if out_x is not None else out,
        cfg.l, cfg.h, cfg.p, cfg.n, cfg.nc, cfg.h // cfg.g,
        *x.stride(), *B.stride(), *C.stride(), *_d_strides(D), *z_strides, *out.stride(),
        HAS_D=D is not None, HAS_Z=z is not None,
        T=cfg.T, BLOCK_T=bt, BLOCK_P=cfg.BP, BLOCK_N=cfg.BN, **cfg.dot, num_warps=warps,
    )
    return out, out_x, final, (dt_buf, cum_buf, states)


def _run_dstates(cfg: _Cfg, dout, z, C, cum_buf, states, final, dfinal):
    """Kernel 3: exit-state gradients (b, nc, h, p, n), d(initial_states) and <dS_c, S_{c+1}> partials."""
    dstates = torch.empty_like(states)
    dinit = torch.empty_like(final)
    last_term = torch.empty(cfg.b, cfg.h, cfg.nc, cfg.nnb, dtype=torch.float32, device=dout.device)
    dstates_kernel[(cfg.b * cfg.h, cfg.nnb)](
        dout, z if z is not None else dout, C, cum_buf, states, final,
        dfinal if dfinal is not None else final, dstates, dinit, last_term,
        cfg.l, cfg.h, cfg.p, cfg.n, cfg.nc, cfg.h // cfg.g, *dout.stride(), *C.stride(),
        HAS_Z=z is not None, HAS_DFINAL=dfinal is not None,
        T=cfg.T, BLOCK_T=cfg.tiles["states"][0], BLOCK_P=cfg.BP, BLOCK_N=cfg.BN_state, **cfg.dot,
        num_warps=cfg.tiles["states"][1],
    )
    return dstates, dinit, last_term


def _run_chunk_bwd(cfg: _Cfg, x, B, C, D, z, dout, out_x, dt_buf, cum_buf, states, dstates):
    """Kernel 4: dx, dz, per-head dB / dC (b, l, h, n), d dt through x dt, d cum, dD partials."""
    f32 = {"dtype": torch.float32, "device": x.device}
    bt, warps = cfg.tiles["bwd"]
    nblk = cfg.T // bt
    dx = torch.empty_like(dout)
    dz = torch.empty_like(dout) if z is not None else None
    dBh = torch.empty(cfg.b, cfg.l, cfg.h, cfg.n, **f32)
    dCh = torch.empty_like(dBh)
    ddt_x, dcum = torch.empty_like(cum_buf), torch.empty_like(cum_buf)
    dD = torch.empty(cfg.b, cfg.nc, nblk, cfg.h, cfg.BP, **f32) if D is not None else None
    chunk_bwd_kernel[(cfg.b * cfg.h, cfg.nc, nblk)](
        x, B, C, D if D is not None else x, z if z is not None else dout, dout,
        out_x if out_x is not None else dout, dt_buf, cum_buf, states, dstates,
        dx, dz if dz is not None else dx, dBh, dCh, ddt_x, dcum, dD if dD is not None else dBh,
        cfg.l, cfg.h, cfg.p, cfg.n, cfg.nc, cfg.h // cfg.g,
        *x.stride(), *B.stride(), *C.stride(), *dout.stride(), *_d_strides(D),
        HAS_D=D is not None, HAS_Z=z is not None,
        T=cfg.T, BLOCK_T=bt, BLOCK_P=cfg.BP, BLOCK_N=cfg.BN, **cfg.dot, num_warps=warps,
    )
    return dx, dz, dBh, dCh, ddt_x, dcum, dD


def _run_ddt(cfg: _Cfg, dt, A, dt_bias, dt_buf, ddt_x, dcum, last_term, softplus):
    """Kernel 5: d dt (b, l, h) and the dA / d dt_bias partials (b, h, nc)."""
    ddt = torch.empty(dt.shape, dtype=dt.dtype, device=dt.device)
    dA_part = torch.empty(cfg.b, cfg.h, cfg.nc, dtype=torch.float32, device=dt.device)
    dbias_part = torch.empty_like(dA_part)
    ddt_kernel[(cfg.b * cfg.h, cfg.nc)](
        dt, A, dt_bias if dt_bias is not None else A, dt_buf, ddt_x, dcum, last_term, ddt, dA_part, dbias_part,
        cfg.l, cfg.h, cfg.nc, cfg.nnb, cfg.lo, cfg.hi, *dt.stride(), *ddt.stride(),
        HAS_BIAS=dt_bias is not None, SOFTPLUS=softplus, CLAMP=cfg.clamp, T=cfg.T, num_warps=4,
    )
    return ddt, dA_part, dbias_part


def _group_sum(dh: Tensor, g: int, like: Tensor) -> Tensor:
    """Per-head (b, l, h, n) -> per-group (b, l, g, n) in ``like``'s dtype."""
    b, l, h, n = dh.shape
    return dh.view(b, l, g, h // g, n).sum(3).to(like.dtype)


class _SSDChunkScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, chunk_size, D, z, dt_bias, init, softplus, dt_limit):
        cfg = _Cfg(x, B, chunk_size, dt_limit)
        out, out_x, final, _ = _forward(cfg, x, dt, A, B, C, D, z, dt_bias, init, softplus)
        ctx.save_for_backward(x, dt, A, B, C, D, z, dt_bias, init, out_x)
        ctx.cfg, ctx.softplus = cfg, softplus
        ctx.set_materialize_grads(False)
        return out, final

    @staticmethod
    def backward(ctx, dout, dfinal):
        x, dt, A, B, C, D, z, dt_bias, init, out_x = ctx.saved_tensors
        cfg, softplus = ctx.cfg, ctx.softplus
        dout = dout.contiguous() if dout is not None else torch.zeros(x.shape, dtype=x.dtype, device=x.device)
        z = z.contiguous() if z is not None else None
        dt_buf, cum_buf, states, final = _run_states(cfg, x, dt, A, B, dt_bias, init, softplus)
        dfinal = dfinal.float().contiguous() if dfinal is not None else None
        dstates, dinit, last_term = _run_dstates(cfg, dout, z, C, cum_buf, states, final, dfinal)
        dx, dz, dBh, dCh, ddt_x, dcum, dD = _run_chunk_bwd(
            cfg, x, B, C, D, z, dout, out_x, dt_buf, cum_buf, states, dstates)
        ddt, dA_part, dbias_part = _run_ddt(cfg, dt, A, dt_bias, dt_buf, ddt_x, dcum, last_term, softplus)
        dB, dC = _group_sum(dBh, cfg.g, B), _group_sum(dCh, cfg.g, C)
        dA = dA_part.sum((0, 2)).to(A.dtype)
        if D is not None:
            dD = dD.sum((0, 1, 2))[:, : cfg.p]  # (h, p)
            dD = (dD.sum(1) if D.dim() == 1 else dD).to(D.dtype)
        d_bias = dbias_part.sum((0, 2)).to(dt_bias.dtype) if dt_bias is not None else None
        d_init = dinit.to(init.dtype) if init is not None else None
        dz = dz.to(z.dtype) if dz is not None else None
        return dx, ddt, dA, dB, dC, None, dD, dz, d_bias, d_init, None, None


def ssd_chunk_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    initial_states: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
):
    """Triton ``ssd_chunk_scan_ref``: y (b, l, h, p) and, if asked, final_states (b, h, p, n) in fp32.

    Differentiable in x, dt, A, B, C, D, z, dt_bias and initial_states. Unsupported shapes (see the
    module docstring) run the reference.
    """
    if not _supported(x, B, chunk_size):
        return ssd_chunk_scan_ref(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
                                  initial_states=initial_states, dt_softplus=dt_softplus, dt_limit=dt_limit,
                                  return_final_states=return_final_states)
    y, final = _SSDChunkScan.apply(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states,
                                   dt_softplus, tuple(dt_limit))
    return (y, final) if return_final_states else y
