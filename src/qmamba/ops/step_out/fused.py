"""``step_out`` in Triton for one row: Mamba-2's gated RMSNorm folded into out_proj's GEMV (one launch where
the unfused ops take two, and the normed row never goes through memory).

Grid (cdiv(n, BLOCK_N),). Every program walks k in BLOCK_K tiles as ``ops.gemv`` does, loading with each
(BLOCK_N, BLOCK_K) tile of out_proj the matching y, z and norm weight: g = y * silu(z), the sum of g^2
alongside the products W (g * norm_weight). With one group 1 / rms is one scalar, so it scales the sums at the
end: out = W (g * norm_weight) / rms (+ bias), products accumulated elementwise in fp32. Each program reads y
and z whole (from L2): the price of not waiting for a norm kernel.

Fused: one row, one group (group_size None or k), the gate before the norm (Mamba-2's default), one dtype;
anything else runs the unfused ops (``step_out_composed``). Several rows run the unfused ops too (the norm
kernel and gemv's split-k tiles). Which runs for one row, the kernel with one of ``TILES`` or the unfused ops,
is measured once per out_proj on first use, as ``ops.gemv`` measures its tiles
(``ops/runtime/measured_choice.py``): a GPU where the extra reads cost more than the launch saves keeps the
unfused ops.
Before any measurement (inside a capture, off the GPU) the unfused ops run.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from qmamba.ops.runtime import pdl
from qmamba.ops.runtime.measured_choice import choice_cache, close_enough, fastest, measure_once
from qmamba.ops.runtime.timing import graph_us, weight_copies
from qmamba.ops.step_out.naive import step_out_composed, step_out_ref

# the one-row GEMV tiles chosen by ``benchmarks/gemv.py``'s sweeps on out_proj-like weights (ops/gemv)
TILES = ({"block_n": 8, "block_k": 256}, {"block_n": 4, "block_k": 512}, {"block_n": 8, "block_k": 512, "dbuf": True},
         {"block_n": 16, "block_k": 256, "dbuf": True})
_CHOSEN: dict[tuple, dict | None] = choice_cache("step_out")  # (out_proj, dtype, device, bias?) -> tiles
MEASURED_ON = ("cuda",)  # device types whose first call measures the variants


@triton.jit
def _step_out_kernel(y_ptr, z_ptr, nw_ptr, w_ptr, b_ptr, out_ptr, n, k, swn, eps, HAS_BIAS: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DBUF: tl.constexpr, PDL: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    mask_n = offs_n < n
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * swn  # (BLOCK_N, 1)
    if DBUF:  # the first tile before the wait: the weight does not depend on the kernel before
        w_next = tl.load(w_rows + tl.arange(0, BLOCK_K)[None, :],
                         mask=mask_n[:, None] & (tl.arange(0, BLOCK_K) < k)[None, :], other=0.0)
    if PDL:  # ops/runtime/pdl.py: the previous kernel's writes are visible from here on; the next one may launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    part = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    ss = tl.zeros((BLOCK_K,), tl.float32)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mk = offs_k < k
        if DBUF:
            w = w_next
            w_next = tl.load(w_rows + (offs_k + BLOCK_K)[None, :],
                             mask=mask_n[:, None] & (offs_k + BLOCK_K < k)[None, :], other=0.0)
        else:
            w = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & mk[None, :], other=0.0)
        yv = tl.load(y_ptr + offs_k, mask=mk, other=0.0).to(tl.float32)
        zv = tl.load(z_ptr + offs_k, mask=mk, other=0.0).to(tl.float32)
        g = yv * zv * tl.sigmoid(zv)  # y * silu(z), (BLOCK_K,)
        ss += g * g
        v = g * tl.load(nw_ptr + offs_k, mask=mk, other=0.0).to(tl.float32)
        part += w.to(tl.float32) * v[None, :]
    rstd = 1.0 / tl.sqrt(tl.sum(ss, axis=0) / k + eps)
    acc = tl.sum(part, axis=1) * rstd  # (BLOCK_N,)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs_n, acc.to(out_ptr.dtype.element_ty), mask=mask_n)


def _launch(y: Tensor, z: Tensor, norm_weight: Tensor, eps: float, out_weight: Tensor, out_bias: Tensor | None,
            cfg: dict) -> Tensor:
    n, k = out_weight.shape
    out = torch.empty(1, n, device=y.device, dtype=y.dtype)
    use_pdl = pdl.enabled(y.device)
    bias = out_bias if out_bias is not None else out_weight
    block_k = min(cfg["block_k"], max(16, triton.next_power_of_2(k)))
    _step_out_kernel[(triton.cdiv(n, cfg["block_n"]),)](
        y, z, norm_weight, out_weight, bias, out, n, k, out_weight.stride(0), eps, HAS_BIAS=out_bias is not None,
        BLOCK_N=cfg["block_n"], BLOCK_K=block_k, DBUF=cfg.get("dbuf", False), PDL=use_pdl, num_warps=4,
        num_stages=1, **pdl.launch_options(use_pdl))
    return out


def fusable(y: Tensor, z: Tensor | None, norm_weight: Tensor, out_weight: Tensor, out_bias: Tensor | None,
            group_size: int | None, norm_before_gate: bool) -> bool:
    """Whether the kernel takes these: one row, one group, the gate before the norm, one dtype, unit strides."""
    k = y.shape[-1]
    return (z is not None and y.dim() == 2 and y.shape[0] == 1 and z.shape == y.shape
            and not norm_before_gate
            and group_size in (None, k) and out_weight.shape[1] == k and y.dtype == z.dtype == out_weight.dtype
            and (out_bias is None or out_bias.dtype == y.dtype)
            and y.stride(-1) == z.stride(-1) == norm_weight.stride(-1) == out_weight.stride(-1) == 1)


def choose(y: Tensor, z: Tensor, norm_weight: Tensor, eps: float, out_weight: Tensor,
           out_bias: Tensor | None) -> dict | None:
    """The fastest of ``TILES`` and the unfused ops for this out_proj (None: unfused), measured once on a probe
    row, each tiling checked against the reference first (see the module docstring)."""
    key = (tuple(out_weight.shape), out_weight.dtype, out_weight.device, out_bias is not None)
    return measure_once(_CHOSEN, key, y.device, None, lambda: _fastest(y, z, norm_weight, eps, out_weight, out_bias),
                        MEASURED_ON)


def _fastest(y: Tensor, z: Tensor, norm_weight: Tensor, eps: float, out_weight: Tensor,
             out_bias: Tensor | None) -> dict | None:
    gen = torch.Generator(y.device).manual_seed(0)
    yp, zp = (torch.randn(y.shape, generator=gen, device=y.device).to(y.dtype) for _ in range(2))
    f32 = lambda t: None if t is None else t.float()  # noqa: E731
    want = step_out_ref(yp.float(), zp.float(), norm_weight.float(), eps, out_weight.float(), f32(out_bias))
    copies = weight_copies(out_weight)  # stand-ins for the other layers' weights: each launch reads from HBM
    unfused_us = graph_us(lambda _, w: step_out_composed(yp, zp, norm_weight, eps, w, out_bias), copies, None)
    return fastest([dict(t) for t in TILES],
                   lambda cfg: close_enough(_launch(yp, zp, norm_weight, eps, out_weight, out_bias, cfg), want),
                   lambda cfg: graph_us(lambda _, w: _launch(yp, zp, norm_weight, eps, w, out_bias, cfg), copies, None),
                   best=None, best_us=unfused_us, what="step_out's tiles", baseline="the unfused ops")


def step_out(y: Tensor, z: Tensor, norm_weight: Tensor, eps: float, out_weight: Tensor,
             out_bias: Tensor | None = None, group_size: int | None = None, norm_before_gate: bool = False,
             config: dict | None = None) -> Tensor:
    """Arguments and result as ``step_out_ref``; ``config`` (tiles) forces the kernel (tests, benchmarks),
    otherwise ``choose`` decides between it and the unfused ops."""
    if not fusable(y, z, norm_weight, out_weight, out_bias, group_size, norm_before_gate):
        return step_out_composed(y, z, norm_weight, eps, out_weight, out_bias, group_size, norm_before_gate)
    cfg = config if config is not None else choose(y, z, norm_weight, eps, out_weight, out_bias)
    if cfg is None:
        return step_out_composed(y, z, norm_weight, eps, out_weight, out_bias, group_size, norm_before_gate)
    return _launch(y, z, norm_weight, eps, out_weight, out_bias, cfg)
