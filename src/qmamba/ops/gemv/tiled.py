"""``gemv`` in Triton: y = x W^T (+ bias) for at most 16 rows of x, the shape of a decode step.

At batch 1 the decode step of a Mamba LM is a chain of matrix-vector products whose time is reading the
weights once. Grid (cdiv(n, BLOCK_N),): a program owns BLOCK_N output features and walks k in tiles of
BLOCK_K, loading a (BLOCK_N, BLOCK_K) tile of W (contiguous along k) and the matching columns of x.

    one row    the products accumulate elementwise in a (BLOCK_N, BLOCK_K) fp32 tile, summed once at the end
    2-16 rows  x is padded to 16 rows and each tile is a tensor-core dot (16, BLOCK_K) x (BLOCK_K, BLOCK_N),
               or with ``swap`` (BLOCK_N, BLOCK_K) x (BLOCK_K, 16), the weight on the M side
    split_k    grid (cdiv(n, BLOCK_N), split_k): each program takes a slice of k, stores its partial sums in
               a slot of its own, and the last slice of a tile to finish adds the slots in slice order
               (``ops/runtime/atomic_sum.py``: the same bits on every run): more programs for weights with few
               rows, and still one launch (no memset, no cast)

Which tiles (or cuBLAS) run is measured once per weight shape, dtype and one row or several on first use,
outside CUDA-graph capture: each candidate is checked on the real weight, then timed as a decode step runs
it (``ops/runtime/timing.py``: launches replayed from a CUDA graph over stand-in copies of the weight, each
read from HBM, consecutive launches overlapping through PDL), and ``F.linear`` is a candidate, so nothing
gets slower. For several rows the candidates are the narrower and split-k tiles that give every SM work
(out_proj's 2560 features make only 80 or 40 programs of 32 or 64 features). Captured before any
measurement: one row takes ``default_config``, several rows cuBLAS.

Two options shape the one-row loop: ``dbuf`` issues each tile's load a tile ahead (two tiles live in
registers; the first before the PDL wait: a weight does not depend on the kernel before), ``prefetch`` asks
L2 for the tiles that many steps ahead and for the first ones before the PDL wait
(``ops/runtime/l2_prefetch.py``).
Falls back to ``F.linear`` for more than 16 rows, mixed dtypes, or a weight not contiguous along k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from qmamba.ops.runtime import l2_prefetch, pdl
from qmamba.ops.runtime.atomic_sum import store_then_last_sums
from qmamba.ops.runtime.l2_prefetch import prefetch_tile
from qmamba.ops.runtime.measured_choice import choice_cache, close_enough, fastest, measure_once
from qmamba.ops.runtime.timing import graph_us, weight_copies

MAX_ROWS = 16


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _gemv_kernel(x_ptr, w_ptr, b_ptr, y_ptr, acc_ptr, cnt_ptr, m, n, k, k_per, sxm, swn, sym,
                 HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 SPLIT_K: tl.constexpr, IEEE: tl.constexpr, PREFETCH: tl.constexpr, LINES: tl.constexpr,
                 DBUF: tl.constexpr, SWAP: tl.constexpr, PDL: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    mask_n = offs_n < n
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * swn  # (BLOCK_N, 1)
    pf_rows = w_ptr + tl.minimum(offs_n, n - 1).to(tl.int64)[:, None] * swn  # in bounds, for prefetches
    offs_m = tl.arange(0, BLOCK_M)
    split = tl.program_id(1)
    k_lo = split * k_per  # this program's slice of k: [k_lo, k_hi)
    k_hi = tl.minimum(k, k_lo + k_per)
    if PREFETCH > 0:  # the first tiles, before waiting: the weights do not depend on the previous kernel
        for ahead in tl.static_range(PREFETCH):
            if k_lo + ahead * BLOCK_K < k_hi:
                prefetch_tile(pf_rows, k_lo + ahead * BLOCK_K, k_hi, BLOCK_K, LINES)
    if DBUF and BLOCK_M == 1:  # the first tile, also before the wait; then each load a tile ahead
        w_next = tl.load(w_rows + (k_lo + tl.arange(0, BLOCK_K))[None, :],
                         mask=mask_n[:, None] & (k_lo + tl.arange(0, BLOCK_K) < k_hi)[None, :], other=0.0)
    if PDL:  # ops/runtime/pdl.py: the previous kernel's writes are visible from here on; the next one may launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    if BLOCK_M == 1:
        part = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            if PREFETCH > 0:
                prefetch_tile(pf_rows, k0 + PREFETCH * BLOCK_K, k_hi, BLOCK_K, LINES)
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mk = offs_k < k_hi
            if DBUF:
                w = w_next
                w_next = tl.load(w_rows + (offs_k + BLOCK_K)[None, :],
                                 mask=mask_n[:, None] & (offs_k + BLOCK_K < k_hi)[None, :], other=0.0)
            else:
                w = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & mk[None, :], other=0.0)
            xv = tl.load(x_ptr + offs_k, mask=mk, other=0.0)
            part += w.to(tl.float32) * xv.to(tl.float32)[None, :]
        acc = tl.sum(part, axis=1)[None, :]  # (1, BLOCK_N)
    else:  # tensor-core dots; SWAP: y^T = W x^T, the weight tile the dot's M side (64 or more features: a
        # warpgroup MMA)
        if SWAP:
            acc = tl.zeros((BLOCK_N, BLOCK_M), tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            if PREFETCH > 0:
                prefetch_tile(pf_rows, k0 + PREFETCH * BLOCK_K, k_hi, BLOCK_K, LINES)
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mk = offs_k < k_hi
            w = tl.load(w_rows + offs_k[None, :], mask=mask_n[:, None] & mk[None, :], other=0.0)
            if SWAP:
                xt = tl.load(x_ptr + offs_m[None, :] * sxm + offs_k[:, None], mask=(offs_m < m)[None, :] & mk[:, None],
                             other=0.0)  # (BLOCK_K, BLOCK_M)
                acc += _dot(w, xt, IEEE)
            else:
                xv = tl.load(x_ptr + offs_m[:, None] * sxm + offs_k[None, :], mask=(offs_m < m)[:, None] & mk[None, :],
                             other=0.0)
                acc += _dot(xv, tl.trans(w), IEEE)
        if SWAP:
            acc = tl.trans(acc)
    if HAS_BIAS:  # added once: by the first slice of k
        bias = tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc += tl.where(offs_n * 0 + split == 0, bias, 0.0)[None, :]
    out = y_ptr + offs_m[:, None] * sym + offs_n[None, :]
    mask = (offs_m < m)[:, None] & mask_n[None, :]
    if SPLIT_K == 1:
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        # the slices of a tile sum their parts; counted against the grid's slices (fewer than SPLIT_K when
        # k_per rounds up), one counter per tile
        store_then_last_sums(acc_ptr + offs_m[:, None] * n + offs_n[None, :], acc, mask, out,
                             cnt_ptr + tl.program_id(0), split, tl.num_programs(1), m * n)


def default_config(m: int, n: int, k: int) -> dict:
    """Tile sizes and launch options for m rows, n features, k inputs: one row while a graph is being captured
    before anything was measured; any rows off the GPU (Triton's interpreter)."""
    if m == 1:
        return {"block_n": 8, "block_k": min(512, triton.next_power_of_2(k)), "num_warps": 4, "num_stages": 1,
                "dbuf": True}
    return {"block_n": 32, "block_k": min(128, max(16, triton.next_power_of_2(k))), "num_warps": 4, "num_stages": 3}


def candidates(n: int, k: int, m: int = 1) -> list[dict]:
    """The configurations measured on first use. One row: the tiles chosen by ``benchmarks/gemv.py``'s sweep
    over the decode weights, and split-k ones for weights of few rows (each compiles once, then is cached).
    Several rows: ``rows_candidates``."""
    if m > 1:
        return rows_candidates(k)
    bk = lambda want: min(want, max(16, triton.next_power_of_2(k)))  # noqa: E731
    out = [{"block_n": bn, "block_k": bk(kk), "num_warps": 4, "num_stages": 1, "dbuf": dbuf}
           for bn, kk, dbuf in ((8, 256, False), (4, 512, False), (8, 512, True), (16, 256, True), (16, 512, True))]
    if n <= 4096:  # few rows: split k, or long tiles prefetched well ahead
        out += [{"block_n": 8, "block_k": bk(256), "num_warps": 4, "num_stages": 3, "split_k": sk}
                for sk in (2, 4, 8) if k // sk >= 256]
        out.append({"block_n": 8, "block_k": bk(1024), "num_warps": 4, "num_stages": 1, "prefetch": 8})
    return out


def rows_candidates(k: int) -> list[dict]:
    """2..16 rows: tensor-core tiles of 16 features (in_proj 640 programs, out_proj 160), alone or with k
    split 2 to 16 ways (x_proj's 12 tiles: 4 slices of 10 k tiles each, a chain of loads), and the
    32-feature tile; and swapped tiles (``swap``: y^T = W x^T, 64 features the M side of a warpgroup MMA on
    Hopper), alone or with k split in 2, 4 or 8."""
    bk = min(128, max(16, triton.next_power_of_2(k)))
    out = [{"block_n": bn, "block_k": bk, "num_warps": 4, "num_stages": 3} for bn in (16, 32)]
    out += [{"block_n": 16, "block_k": bk, "num_warps": 4, "num_stages": 3, "split_k": sk}
            for sk in (2, 4, 8, 16) if k // sk >= 2 * bk]
    out += [{"block_n": 64, "block_k": bk, "num_warps": 4, "num_stages": 3, "swap": True, "split_k": sk}
            for sk in (1, 2, 4, 8) if sk == 1 or k // sk >= 4 * bk]
    return out


_CHOSEN: dict[tuple, dict | None] = choice_cache("gemv")  # None: F.linear


def choose(x2: Tensor, weight: Tensor, bias: Tensor | None) -> dict | None:
    """The fastest of ``candidates`` and F.linear for this weight, measured once (see the module docstring)."""
    m, k = x2.shape
    key = (tuple(weight.shape), weight.dtype, weight.device, bias is not None, *(("rows",) if m > 1 else ()))
    default = default_config(m, weight.shape[0], k) if m == 1 else None
    return measure_once(_CHOSEN, key, x2.device, default, lambda: _fastest(x2, weight, bias))


def _fastest(x2: Tensor, weight: Tensor, bias: Tensor | None) -> dict | None:
    m, k = x2.shape
    gen = torch.Generator(x2.device).manual_seed(0)  # a probe row: x2 may be anything (a graph's warm-up buffers)
    x2 = torch.randn(x2.shape, generator=gen, device=x2.device).to(x2.dtype)
    copies = weight_copies(weight)  # stand-ins for the other layers' weights: each launch reads from HBM
    want = F.linear(x2.float(), weight.float(), None if bias is None else bias.float())
    return fastest(candidates(weight.shape[0], k, m), lambda cfg: close_enough(_launch(x2, weight, bias, cfg), want),
                   lambda cfg: graph_us(lambda x, w: _launch(x, w, bias, cfg), copies, x2),
                   best=None, best_us=graph_us(lambda x, w: F.linear(x, w, bias), copies, x2), what="the gemv tiles",
                   baseline="F.linear")


_SCRATCH: dict[torch.device, tuple[Tensor, Tensor]] = {}  # split-k: fp32 slots, int32 tile counters (zeroed)
_OUTGROWN: list[Tensor] = []  # earlier, smaller scratch: kept, as CUDA graphs captured before may still use it


def _scratch(device: torch.device, sums: int, tiles: int) -> tuple[Tensor, Tensor]:
    """Every split-k launch leaves the counters zeroed (the slots are overwritten), so launches must not
    overlap in time (one stream); they grow on first use of a larger weight (before any graph capture:
    ``choose`` runs the configs first)."""
    acc, cnt = _SCRATCH.get(device, (None, None))
    if acc is None or acc.numel() < sums or cnt.numel() < tiles:
        if acc is not None:
            _OUTGROWN.extend((acc, cnt))
        acc = torch.empty(max(sums, 0 if acc is None else acc.numel()), device=device)
        cnt = torch.zeros(max(tiles, 0 if cnt is None else cnt.numel()), device=device, dtype=torch.int32)
        _SCRATCH[device] = (acc, cnt)
    return acc, cnt


def _launch(x2: Tensor, weight: Tensor, bias: Tensor | None, cfg: dict) -> Tensor:
    m, k = x2.shape
    n = weight.shape[0]
    split = cfg.get("split_k", 1)
    k_per = triton.cdiv(triton.cdiv(k, split), cfg["block_k"]) * cfg["block_k"]
    y = torch.empty(m, n, device=x2.device, dtype=x2.dtype)
    tiles = triton.cdiv(n, cfg["block_n"])
    acc, cnt = _scratch(x2.device, triton.cdiv(k, k_per) * m * n, tiles) if split > 1 else (y, y)
    use_pdl = pdl.enabled(x2.device)
    _gemv_kernel[(tiles, triton.cdiv(k, k_per))](
        x2, weight, bias if bias is not None else weight, y, acc, cnt, m, n, k, k_per, x2.stride(0), weight.stride(0),
        y.stride(0), HAS_BIAS=bias is not None, BLOCK_M=1 if m == 1 else MAX_ROWS, BLOCK_N=cfg["block_n"],
        BLOCK_K=cfg["block_k"], SPLIT_K=split, IEEE=x2.dtype == torch.float32,
        PREFETCH=cfg.get("prefetch", 0) if l2_prefetch.enabled() else 0,
        LINES=l2_prefetch.lines(cfg["block_k"], weight.element_size()), DBUF=cfg.get("dbuf", False),
        SWAP=cfg.get("swap", False) and m > 1, PDL=use_pdl,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **pdl.launch_options(use_pdl),
    )
    return y


def gemv(x: Tensor, weight: Tensor, bias: Tensor | None = None, config: dict | None = None) -> Tensor:
    """x (..., k), weight (n, k), bias (n,) -> (..., n); ``config`` forces a tile configuration (tests,
    benchmarks), otherwise ``choose`` picks one (or F.linear) for the weight."""
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    m, n = x2.shape[0], weight.shape[0]
    if (m == 0 or m > MAX_ROWS or weight.dtype != x.dtype or weight.stride(-1) != 1 or x2.stride(-1) != 1
            or (bias is not None and bias.dtype != x.dtype)):
        return F.linear(x, weight, bias)
    if config is None and x.device.type == "cuda":
        config = choose(x2, weight, bias)
        if config is None:
            return F.linear(x, weight, bias)
    return _launch(x2, weight, bias, config or default_config(m, n, k)).view(*x.shape[:-1], n)
