"""``step_in`` in Triton for one row (2..16 rows: ``fused_rows.py``): the block's residual add + RMSNorm,
in_proj and the conv update of a Mamba decode step in one kernel (three launches and two round trips through
memory fewer).

Grid (cdiv(n_out, BLOCK_N),), one row (b = 1). Every program
    1. walks hidden + residual in BLOCK_K tiles for the sum of squares (program 0 also stores the new residual);
    2. walks them again, normalising each tile (rounded to hidden's dtype, as add_norm's output is) and
       accumulating its BLOCK_N rows of in_proj as one GEMV (``ops.gemv``'s one-row scheme);
    3. rounds the in_proj outputs to the weight dtype; conv rows [conv_lo, conv_lo + c) roll their channel's
       conv state, append the new input and store silu(conv + bias); the other rows store the output as is;
    4. with x_proj (Mamba-1): its conv channels' share of x_proj (n_xp x BLOCK_N weights times their
       outputs), summed across programs in the launch (``ops/runtime/atomic_sum.py``) through a per-device scratch
       that every launch leaves zeroed, so launches must not overlap in time (one stream).
Larger batches take ``step_in_composed`` (the same ops unfused).
"""

from __future__ import annotations

import logging

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.compiler.errors import CompilationError

from qmamba.ops.gemv import gemv
from qmamba.ops.rms_norm import add_norm
from qmamba.ops.runtime import atomic_sum, l2_prefetch, pdl
from qmamba.ops.runtime.atomic_sum import add_then_last_stores
from qmamba.ops.runtime.l2_prefetch import prefetch_tile
from qmamba.ops.runtime.measured_choice import choice_cache, close_enough, fastest, measure_once
from qmamba.ops.runtime.timing import graph_us, weight_copies
from qmamba.ops.step_in.fused_rows import ROWS, launch_rows
from qmamba.ops.step_in.naive import step_in_composed

log = logging.getLogger("qmamba")
_UNCOMPILABLE: set[tuple] = set()  # kernel variants this Triton could not compile: composed from then on


@triton.jit
def _sum_tile(h_ptr, r_ptr, k0, d, HAS_RES: tl.constexpr, BLOCK_K: tl.constexpr):
    """Columns [k0, k0 + BLOCK_K) of hidden + residual in fp32, their offsets and mask."""
    offs = k0 + tl.arange(0, BLOCK_K)
    mk = offs < d
    t = tl.load(h_ptr + offs, mask=mk, other=0.0).to(tl.float32)
    if HAS_RES:
        t += tl.load(r_ptr + offs, mask=mk, other=0.0).to(tl.float32)
    return t, offs, mk


@triton.jit
def _xproj_share(xw_ptr, xo_ptr, acc_ptr, cnt_ptr, yq, c, is_x, n_xp, s_xw, XP_PAD: tl.constexpr):
    """Step 4: this program's conv channels c (BLOCK_N,) with outputs yq times x_proj's columns, summed across
    programs into acc; the last program stores the sum to xo and leaves acc and the counter zeroed."""
    r = tl.arange(0, XP_PAD)
    mr = r < n_xp
    wx = tl.load(xw_ptr + r.to(tl.int64)[:, None] * s_xw + c[None, :], mask=mr[:, None] & is_x[None, :], other=0.0)
    part = tl.sum(wx.to(tl.float32) * tl.where(is_x, yq.to(tl.float32), 0.0)[None, :], axis=1)  # (XP_PAD,)
    n_x = tl.sum(is_x.to(tl.int32), axis=0)  # this program's conv channels
    add_then_last_stores(acc_ptr + r, part, mr & (r * 0 + n_x > 0), mr, xo_ptr + r, cnt_ptr, tl.num_programs(0))


@triton.jit
def _step_in_kernel(h_ptr, r_ptr, nw_ptr, w_ptr, b_ptr, cs_ptr, cw_ptr, cb_ptr, y_ptr, ro_ptr,
                    xw_ptr, xo_ptr, acc_ptr, cnt_ptr,
                    d, n_out, conv_lo, n_conv, eps, swn, s_csd, s_csw, s_cwd, s_cww, n_xp, s_xw,
                    HAS_RES: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CONV_BIAS: tl.constexpr,
                    HAS_XPROJ: tl.constexpr, XP_PAD: tl.constexpr,
                    W: tl.constexpr, W_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    NORMED: tl.constexpr, DBUF: tl.constexpr, PREFETCH: tl.constexpr, LINES: tl.constexpr,
                    PDL: tl.constexpr):
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) rows of in_proj
    mask_n = offs_n < n_out
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * swn
    pf_rows = w_ptr + tl.minimum(offs_n, n_out - 1).to(tl.int64)[:, None] * swn  # in bounds, for prefetches
    if PREFETCH > 0:  # in_proj's first tiles (ops/runtime/l2_prefetch.py), before waiting on the previous kernel
        for ahead in tl.static_range(PREFETCH):
            if ahead * BLOCK_K < d:
                prefetch_tile(pf_rows, ahead * BLOCK_K, d, BLOCK_K, LINES)
    if DBUF:  # in_proj's first tile, before the wait too (weights do not depend on the previous kernel)
        w_next = tl.load(w_rows + tl.arange(0, BLOCK_K)[None, :],
                         mask=mask_n[:, None] & (tl.arange(0, BLOCK_K) < d)[None, :], other=0.0)
    if PDL:  # ops/runtime/pdl.py: the previous kernel's writes are visible from here on; the next one may launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    if NORMED:  # h is add_norm's output: no norm here, the residual was stored by add_norm
        rstd = 1.0
    else:  # 1. sum of squares of hidden + residual; program 0 stores the new residual
        ss = tl.zeros((BLOCK_K,), tl.float32)
        for k0 in range(0, d, BLOCK_K):
            t, offs, mk = _sum_tile(h_ptr, r_ptr, k0, d, HAS_RES, BLOCK_K)
            ss += t * t
            tl.store(ro_ptr + offs, t.to(ro_ptr.dtype.element_ty), mask=mk & (offs * 0 + pid == 0))
        rstd = 1.0 / tl.sqrt(tl.sum(ss, axis=0) / d + eps)
    # 2. in_proj rows of this program on the normalised row
    part = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    for k0 in range(0, d, BLOCK_K):
        if PREFETCH > 0:
            prefetch_tile(pf_rows, k0 + PREFETCH * BLOCK_K, d, BLOCK_K, LINES)
        if NORMED:
            offs = k0 + tl.arange(0, BLOCK_K)
            mk = offs < d
            hn = tl.load(h_ptr + offs, mask=mk, other=0.0)
        else:
            t, offs, mk = _sum_tile(h_ptr, r_ptr, k0, d, HAS_RES, BLOCK_K)
            hn = (t * rstd * tl.load(nw_ptr + offs, mask=mk, other=0.0).to(tl.float32)).to(h_ptr.dtype.element_ty)
        if DBUF:  # each tile's load a tile ahead
            w = w_next
            w_next = tl.load(w_rows + (offs + BLOCK_K)[None, :], mask=mask_n[:, None] & (offs + BLOCK_K < d)[None, :],
                             other=0.0)
        else:
            w = tl.load(w_rows + offs[None, :], mask=mask_n[:, None] & mk[None, :], other=0.0)
        part += w.to(tl.float32) * hn.to(tl.float32)[None, :]
    xz = tl.sum(part, axis=1)
    if HAS_BIAS:
        xz += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
    xz = xz.to(y_ptr.dtype.element_ty)  # (BLOCK_N,) rounded as in_proj's output
    # 3. conv rows: conv update + silu; other rows: store
    is_x = mask_n & (offs_n >= conv_lo) & (offs_n < conv_lo + n_conv)
    c = tl.where(is_x, offs_n - conv_lo, 0).to(tl.int64)  # conv channel
    j = tl.arange(0, W_PAD)
    mj = is_x[:, None] & (j < W)[None, :]
    state = tl.load(cs_ptr + c[:, None] * s_csd + (j[None, :] + 1) * s_csw, mask=mj & (j < W - 1)[None, :], other=0.0)
    state = tl.where((j == W - 1)[None, :], xz[:, None].to(state.dtype), state)  # (BLOCK_N, W_PAD) rolled window
    tl.store(cs_ptr + c[:, None] * s_csd + j[None, :] * s_csw, state, mask=mj)
    cw = tl.load(cw_ptr + c[:, None] * s_cwd + j[None, :] * s_cww, mask=mj, other=0.0).to(tl.float32)
    y = tl.sum(state.to(tl.float32) * cw, axis=1)
    if HAS_CONV_BIAS:
        y += tl.load(cb_ptr + c, mask=is_x, other=0.0).to(tl.float32)
    y = y * tl.sigmoid(y)
    yq = tl.where(is_x, y.to(y_ptr.dtype.element_ty), xz)
    tl.store(y_ptr + offs_n, yq, mask=mask_n)
    if HAS_XPROJ:  # 4. Mamba-1's x_proj of the conv outputs
        _xproj_share(xw_ptr, xo_ptr, acc_ptr, cnt_ptr, yq, c, is_x, n_xp, s_xw, XP_PAD)


_MAX_XP = 1024  # x_proj rows the fused kernel takes (Mamba-1: dt_rank + 2 d_state; 192 at 2.8B)
_SCRATCH: dict[torch.device, tuple[Tensor, Tensor]] = {}  # device -> (fixed-point int64 sums, int32 counter), zeroed


def _scratch(device: torch.device) -> tuple[Tensor, Tensor]:
    if device not in _SCRATCH:  # room for ROWS rows of x_proj
        _SCRATCH[device] = (torch.zeros(ROWS * _MAX_XP, device=device, dtype=torch.int64),
                            torch.zeros(1, device=device, dtype=torch.int32))
    return _SCRATCH[device]


# The defaults before anything is measured (chosen by benchmarks/step_in.py); ``measured_config`` times the
# variants on first use. One row: add_norm first (prenorm), then the kernel on its output; x_proj runs after
# the kernel (fuse_xproj False). Several rows: the rows kernel on add_norm's output runs only without x_proj in
# it (rows_kernel: None, True or False forces it; fuse_xproj False: the rows kernel, then x_proj on its conv
# rows); without prenorm every program re-reads all rows' hidden + residual.
ONE_ROW = {"block_n": 16, "block_k": 256, "num_warps": 4, "num_stages": 3, "fuse_xproj": False, "prenorm": True,
           "prefetch": 0, "dbuf": False}
SEVERAL_ROWS = {"block_n": 64, "block_k": 128, "num_warps": 4, "num_stages": 3, "prenorm": True,
                "rows_kernel": None, "fuse_xproj": True}


ONE_ROW_TILES = ({}, {"block_n": 8}, {"dbuf": True}, {"block_n": 8, "block_k": 512})  # over ONE_ROW, timed


def rows_variants(has_xproj: bool) -> tuple[dict, ...]:
    """The ways 2..16 rows can run, over ``SEVERAL_ROWS``, timed on first use: the unfused ops, and the rows
    kernel with 64 or 32 features a program (Mamba-1: x_proj after it)."""
    kernel = {"rows_kernel": True, **({"fuse_xproj": False} if has_xproj else {})}
    return {"rows_kernel": False}, kernel, {**kernel, "block_n": 32}


_CHOSEN: dict[tuple, dict] = choice_cache("step_in")  # (in_proj, conv rows, dtype, device, rows, x_proj?) -> config
MEASURED_ON = ("cuda",)  # device types whose first call at a number of rows measures the variants


def measured_config(hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias,
                    conv_lo, residual_in_fp32, xproj_weight) -> dict:
    """For one row, ONE_ROW with the ``ONE_ROW_TILES`` variant that ran fastest for this in_proj; for 2..16
    rows, SEVERAL_ROWS with the fastest of ``rows_variants`` at this number of rows. Measured once on first
    use as ``ops.gemv`` measures its tiles (in a CUDA graph over stand-in copies of the weight, on probe rows
    and a scratch conv state: the real state does not move), each checked against the composed ops first.
    The best differ by in_proj and by card. Before any measurement (off the GPU, inside a capture):
    the default (ONE_ROW, SEVERAL_ROWS)."""
    b = hidden.shape[0]
    default = ONE_ROW if b == 1 else SEVERAL_ROWS
    key = (tuple(in_weight.shape), conv_lo, conv_state.shape[1], hidden.dtype, hidden.device, b,
           xproj_weight is not None)
    args = (hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo,
            residual_in_fp32, xproj_weight)
    return measure_once(_CHOSEN, key, hidden.device, default, lambda: _fastest_way(args, default), MEASURED_ON)


def _fastest_way(args: tuple, default: dict) -> dict:
    hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo, \
        residual_in_fp32, xproj_weight = args
    b = hidden.shape[0]
    variants = ONE_ROW_TILES if b == 1 else rows_variants(xproj_weight is not None)
    gen = torch.Generator(hidden.device).manual_seed(0)
    probe = lambda t: None if t is None else torch.randn(t.shape, generator=gen, device=t.device).to(t.dtype)  # noqa: E731
    h, r = probe(hidden), probe(residual)
    state = conv_state.clone()  # scratch: every call below rolls it

    def run(w, cfg):
        return step_in(h, r, norm_weight, eps, w, in_bias, state, conv_weight, conv_bias, conv_lo, residual_in_fp32,
                       xproj_weight, **cfg)

    want = step_in_composed(h, r, norm_weight, eps, in_weight, in_bias, conv_state.clone(), conv_weight, conv_bias,
                            conv_lo, residual_in_fp32, xproj_weight)

    def matches(cfg: dict) -> bool:
        state.copy_(conv_state)
        got = run(in_weight, cfg)
        return close_enough(got[0], want[0].float()) and (xproj_weight is None or close_enough(got[2], want[2].float()))

    copies = weight_copies(in_weight)  # stand-ins for the other layers' weights: each launch reads from HBM
    return fastest([{**default, **v} for v in variants], matches,
                   lambda cfg: graph_us(lambda _, w: run(w, cfg), copies, None), best=default,
                   what="step_in's one-row tiles" if b == 1 else f"step_in's ways for {b} rows")


def step_in(hidden: Tensor, residual: Tensor | None, norm_weight: Tensor, eps: float, in_weight: Tensor,
            in_bias: Tensor | None, conv_state: Tensor, conv_weight: Tensor, conv_bias: Tensor | None,
            conv_lo: int = 0, residual_in_fp32: bool = True, xproj_weight: Tensor | None = None, **config):
    """Arguments and results as ``step_in_ref``; one row in one kernel, 2..16 rows in the rows kernel
    (``fused_rows.py``), anything else composed. Without a ``config``, ``measured_config``'s choice runs;
    a ``config`` given replaces it with ``ONE_ROW`` (``SEVERAL_ROWS`` for several rows) and overrides those
    (block_n, block_k, num_warps, num_stages; for several rows ``prenorm``: add_norm first, then the rows
    kernel on its output, so the programs do not each re-read every row's hidden + residual)."""
    args = (hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo,
            residual_in_fp32, xproj_weight)
    b, n_out, n_conv = hidden.shape[0], in_weight.shape[0], conv_state.shape[1]
    if (b == 0 or b > ROWS or hidden.stride(-1) != 1 or in_weight.stride(-1) != 1 or in_weight.dtype != hidden.dtype
            or (residual is not None and residual.stride(-1) != 1) or conv_lo + n_conv > n_out
            or (xproj_weight is not None and (xproj_weight.shape[0] > _MAX_XP or xproj_weight.stride(-1) != 1))):
        return step_in_composed(*args)
    given = {k: v for k, v in config.items() if v is not None}
    base = (ONE_ROW if b == 1 else SEVERAL_ROWS) if given else measured_config(*args)
    cfg = {**base, **given}
    if xproj_weight is not None and not cfg["fuse_xproj"] and (b == 1 or cfg["rows_kernel"] is not False):
        y, res, _ = step_in(*args[:-1], None, **cfg)  # the kernel without x_proj, then x_proj on its conv rows
        return y, res, gemv(y[:, conv_lo:conv_lo + n_conv], xproj_weight)
    if b > 1 and not (xproj_weight is None if cfg["rows_kernel"] is None else cfg["rows_kernel"]):
        return step_in_composed(*args)
    if xproj_weight is not None and triton.cdiv(n_out, cfg["block_n"]) > atomic_sum.MAX_PARTS:
        return step_in_composed(*args)  # more programs than x_proj's in-launch sum can count
    variant = (b == 1, hidden.dtype, in_weight.dtype, conv_state.dtype, residual is not None,
               xproj_weight is not None, *sorted(cfg.items()))
    if variant in _UNCOMPILABLE:
        return step_in_composed(*args)
    y = torch.empty(b, n_out, device=hidden.device, dtype=hidden.dtype)
    xdbl = None if xproj_weight is None else torch.empty(b, xproj_weight.shape[0], device=y.device, dtype=y.dtype)
    try:
        if b == 1 and cfg.get("prenorm"):
            hn, res = add_norm(hidden, norm_weight, None, residual, eps=eps, is_rms_norm=True,
                               residual_in_fp32=residual_in_fp32)
            _launch(hn, None, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias,
                    conv_lo, xproj_weight, y, hn, xdbl, cfg, normed=True)
        elif b == 1:
            res = _residual_out(hidden, residual, residual_in_fp32)
            _launch(hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias,
                    conv_lo, xproj_weight, y, res, xdbl, cfg)
        else:
            res = _launch_rows(args, y, xdbl, cfg)
    except CompilationError as e:  # compiling happens before the launch: nothing was written yet
        _UNCOMPILABLE.add(variant)
        log.warning("step_in: Triton could not compile the fused kernel (%s); using the unfused ops",
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
        return step_in_composed(*args)
    return y, res, xdbl


def _residual_out(hidden: Tensor, residual: Tensor | None, residual_in_fp32: bool) -> Tensor:
    res_dtype = torch.float32 if residual_in_fp32 else (residual.dtype if residual is not None else hidden.dtype)
    return torch.empty(hidden.shape, device=hidden.device, dtype=res_dtype)


def _launch_rows(args: tuple, y: Tensor, xdbl: Tensor | None, cfg: dict) -> Tensor:
    """The rows kernel on ``args`` (as ``step_in``'s); returns the new residual."""
    hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo, \
        residual_in_fp32, xproj_weight = args
    use_pdl = pdl.enabled(hidden.device)
    tiles = {k: cfg[k] for k in ("block_n", "block_k", "num_warps", "num_stages")}
    if cfg.get("prenorm"):
        hn, res = add_norm(hidden, norm_weight, None, residual, eps=eps, is_rms_norm=True,
                           residual_in_fp32=residual_in_fp32)
        launch_rows(hn, None, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo,
                    xproj_weight, y, hn, xdbl, *_scratch(hidden.device), use_pdl, pdl.launch_options(use_pdl),
                    normed=True, **tiles)
        return res
    res = _residual_out(hidden, residual, residual_in_fp32)
    launch_rows(hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo,
                xproj_weight, y, res, xdbl, *_scratch(hidden.device), use_pdl, pdl.launch_options(use_pdl), **tiles)
    return res


def _launch(hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo,
            xproj_weight, y, res, xdbl, cfg: dict, normed: bool = False) -> None:
    d, n_out, n_conv, w = hidden.shape[-1], in_weight.shape[0], conv_state.shape[1], conv_weight.shape[-1]
    block_n, block_k = cfg["block_n"], cfg["block_k"]
    acc, count = _scratch(hidden.device)
    use_pdl = pdl.enabled(hidden.device)
    n_xp = 0 if xproj_weight is None else xproj_weight.shape[0]
    _step_in_kernel[(triton.cdiv(n_out, block_n),)](
        hidden, residual if residual is not None else hidden, norm_weight, in_weight,
        in_bias if in_bias is not None else norm_weight, conv_state, conv_weight,
        conv_bias if conv_bias is not None else norm_weight, y, res,
        xproj_weight if xproj_weight is not None else in_weight, xdbl if xdbl is not None else y, acc, count,
        d, n_out, conv_lo, n_conv, eps, in_weight.stride(0), conv_state.stride(1), conv_state.stride(2),
        *conv_weight.stride(), n_xp, xproj_weight.stride(0) if xproj_weight is not None else 0,
        HAS_RES=residual is not None, HAS_BIAS=in_bias is not None, HAS_CONV_BIAS=conv_bias is not None,
        HAS_XPROJ=xproj_weight is not None, XP_PAD=max(triton.next_power_of_2(n_xp), 16),
        W=w, W_PAD=triton.next_power_of_2(w), BLOCK_N=block_n, BLOCK_K=min(block_k, triton.next_power_of_2(d)),
        NORMED=normed, DBUF=cfg.get("dbuf", False),
        PREFETCH=cfg.get("prefetch", 0) if l2_prefetch.enabled() else 0,
        LINES=l2_prefetch.lines(min(block_k, triton.next_power_of_2(d)), in_weight.element_size()), PDL=use_pdl,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **pdl.launch_options(use_pdl),
    )
