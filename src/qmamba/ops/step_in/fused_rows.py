"""``step_in`` in Triton for 2 to 16 rows (a decode step at a small batch): the same four steps as the one-row
kernel of ``fused.py``, each over all rows at once.

Grid (cdiv(n_out, BLOCK_N),). Every program
    1. walks hidden + residual of every row in (BLOCK_M, BLOCK_K) tiles for the rows' sums of squares
       (program 0 also stores the new residual);
    2. walks them again, normalising each tile and accumulating its BLOCK_N rows of in_proj for all rows as
       tensor-core dots (BLOCK_M, BLOCK_K) x (BLOCK_K, BLOCK_N), BLOCK_M = 16 (rows past b are masked);
    3. rounds to the weight dtype; for conv rows rolls each batch row's conv state (a (BLOCK_M, BLOCK_N, W)
       tile), appends the new input and stores silu(conv + bias);
    4. with x_proj (Mamba-1): its conv channels' share of x_proj for all rows, one dot
       (BLOCK_M, BLOCK_N) x (BLOCK_N, XP_PAD), summed across programs as in ``fused.py``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qmamba.ops.runtime.atomic_sum import add_then_last_stores

ROWS = 16  # BLOCK_M: the rows of a tensor-core dot; batches of 2..16 pad to it


@triton.jit
def _row_tiles(h_ptr, r_ptr, rows, mrow, k0, d, s_hm, s_rm, HAS_RES: tl.constexpr, BLOCK_K: tl.constexpr):
    """Columns [k0, k0 + BLOCK_K) of hidden + residual for every row, fp32 (BLOCK_M, BLOCK_K); offsets, mask."""
    offs = k0 + tl.arange(0, BLOCK_K)
    mask = mrow[:, None] & (offs < d)[None, :]
    t = tl.load(h_ptr + rows[:, None] * s_hm + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        t += tl.load(r_ptr + rows[:, None] * s_rm + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    return t, offs, mask


@triton.jit
def _xproj_rows(xw_ptr, xo_ptr, acc_ptr, cnt_ptr, yq, rows, mrow, c, is_x, n_xp, s_xw, s_xom,
                XP_PAD: tl.constexpr, IEEE: tl.constexpr):
    """Step 4 for all rows: yq (BLOCK_M, BLOCK_N) conv outputs of channels c times x_proj's columns."""
    r = tl.arange(0, XP_PAD)
    mr = r < n_xp
    wx = tl.load(xw_ptr + r.to(tl.int64)[None, :] * s_xw + c[:, None], mask=is_x[:, None] & mr[None, :], other=0.0)
    ys = tl.where(mrow[:, None] & is_x[None, :], yq, 0.0).to(wx.dtype)
    if IEEE:
        part = tl.dot(ys, wx, input_precision="ieee")  # (BLOCK_M, XP_PAD)
    else:
        part = tl.dot(ys, wx)
    n_x = tl.sum(is_x.to(tl.int32), axis=0)  # this program's conv channels
    mask = mrow[:, None] & mr[None, :]
    add_then_last_stores(acc_ptr + rows[:, None] * n_xp + r[None, :], part, mask & (rows[:, None] * 0 + n_x > 0),
                         mask, xo_ptr + rows[:, None] * s_xom + r[None, :], cnt_ptr, tl.num_programs(0))


@triton.jit
def _step_in_rows_kernel(h_ptr, r_ptr, nw_ptr, w_ptr, b_ptr, cs_ptr, cw_ptr, cb_ptr, y_ptr, ro_ptr,
                         xw_ptr, xo_ptr, acc_ptr, cnt_ptr,
                         m, d, n_out, conv_lo, n_conv, eps, s_hm, s_rm, s_ym, s_rom, swn, s_csb, s_csd, s_csw,
                         s_cwd, s_cww, n_xp, s_xw, s_xom,
                         HAS_RES: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_CONV_BIAS: tl.constexpr,
                         HAS_XPROJ: tl.constexpr, XP_PAD: tl.constexpr, W: tl.constexpr, W_PAD: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr,
                         NORMED: tl.constexpr, PDL: tl.constexpr):
    if PDL:  # ops/runtime/pdl.py: the previous kernel's writes are visible from here on; the next one may launch
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK_M)
    mrow = rows < m
    rstd = tl.full((BLOCK_M,), 1.0, tl.float32)
    if not NORMED:  # 1. each row's sum of squares of hidden + residual; program 0 stores the new residual
        ss = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
        for k0 in range(0, d, BLOCK_K):
            t, offs, mask = _row_tiles(h_ptr, r_ptr, rows, mrow, k0, d, s_hm, s_rm, HAS_RES, BLOCK_K)
            ss += t * t
            tl.store(ro_ptr + rows[:, None] * s_rom + offs[None, :], t.to(ro_ptr.dtype.element_ty),
                     mask=mask & (rows[:, None] * 0 + pid == 0))
        rstd = 1.0 / tl.sqrt(tl.sum(ss, axis=1) / d + eps)  # (BLOCK_M,)
    # 2. this program's in_proj rows for every batch row
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < n_out
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * swn
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, d, BLOCK_K):
        t, offs, mask = _row_tiles(h_ptr, r_ptr, rows, mrow, k0, d, s_hm, s_rm, HAS_RES, BLOCK_K)
        if NORMED:  # hidden is add_norm's output already
            hn = t.to(h_ptr.dtype.element_ty)
        else:
            nw = tl.load(nw_ptr + offs, mask=offs < d, other=0.0).to(tl.float32)
            hn = (t * rstd[:, None] * nw[None, :]).to(h_ptr.dtype.element_ty)  # rounded as add_norm's output
        w = tl.load(w_rows + offs[None, :], mask=mask_n[:, None] & (offs < d)[None, :], other=0.0)
        if IEEE:
            acc += tl.dot(hn, tl.trans(w), input_precision="ieee")
        else:
            acc += tl.dot(hn, tl.trans(w))
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    xz = acc.to(y_ptr.dtype.element_ty)  # (BLOCK_M, BLOCK_N) rounded as in_proj's output
    # 3. conv rows: each batch row's conv update + silu; other rows: store
    is_x = mask_n & (offs_n >= conv_lo) & (offs_n < conv_lo + n_conv)
    c = tl.where(is_x, offs_n - conv_lo, 0).to(tl.int64)  # conv channel
    j = tl.arange(0, W_PAD)
    m3 = mrow[:, None, None] & is_x[None, :, None] & (j < W)[None, None, :]
    window = cs_ptr + rows.to(tl.int64)[:, None, None] * s_csb + c[None, :, None] * s_csd
    state = tl.load(window + (j[None, None, :] + 1) * s_csw, mask=m3 & (j < W - 1)[None, None, :], other=0.0)
    state = tl.where((j == W - 1)[None, None, :], xz[:, :, None].to(state.dtype), state)  # rolled window
    tl.store(window + j[None, None, :] * s_csw, state, mask=m3)
    cw = tl.load(cw_ptr + c[:, None] * s_cwd + j[None, :] * s_cww, mask=is_x[:, None] & (j < W)[None, :],
                 other=0.0).to(tl.float32)  # (BLOCK_N, W_PAD)
    yv = tl.sum(state.to(tl.float32) * cw[None, :, :], axis=2)  # (BLOCK_M, BLOCK_N)
    if HAS_CONV_BIAS:
        yv += tl.load(cb_ptr + c, mask=is_x, other=0.0).to(tl.float32)[None, :]
    yv = yv * tl.sigmoid(yv)
    yq = tl.where(is_x[None, :], yv.to(y_ptr.dtype.element_ty), xz)
    tl.store(y_ptr + rows[:, None] * s_ym + offs_n[None, :], yq, mask=mrow[:, None] & mask_n[None, :])
    if HAS_XPROJ:  # 4. Mamba-1's x_proj of the conv outputs
        _xproj_rows(xw_ptr, xo_ptr, acc_ptr, cnt_ptr, yq, rows, mrow, c, is_x, n_xp, s_xw, s_xom, XP_PAD, IEEE)


def launch_rows(hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo,
                xproj_weight, y, res, xdbl, acc, count, use_pdl: bool, launch_options: dict, block_n: int,
                block_k: int, num_warps: int, num_stages: int, normed: bool = False) -> None:
    """One launch for ``hidden.shape[0]`` <= ROWS rows; outputs y (b, n_out), res (b, d), xdbl (b, n_xp).
    ``normed``: hidden is add_norm's output (steps 2-4 only; res is not written)."""
    m, d = hidden.shape
    n_out, n_conv, w = in_weight.shape[0], conv_state.shape[1], conv_weight.shape[-1]
    n_xp = 0 if xproj_weight is None else xproj_weight.shape[0]
    _step_in_rows_kernel[(triton.cdiv(n_out, block_n),)](
        hidden, residual if residual is not None else hidden, norm_weight, in_weight,
        in_bias if in_bias is not None else norm_weight, conv_state, conv_weight,
        conv_bias if conv_bias is not None else norm_weight, y, res,
        xproj_weight if xproj_weight is not None else in_weight, xdbl if xdbl is not None else y, acc, count,
        m, d, n_out, conv_lo, n_conv, eps, hidden.stride(0), residual.stride(0) if residual is not None else 0,
        y.stride(0), res.stride(0), in_weight.stride(0), *conv_state.stride(), *conv_weight.stride(), n_xp,
        xproj_weight.stride(0) if xproj_weight is not None else 0, xdbl.stride(0) if xdbl is not None else 0,
        HAS_RES=residual is not None, HAS_BIAS=in_bias is not None, HAS_CONV_BIAS=conv_bias is not None,
        HAS_XPROJ=xproj_weight is not None, XP_PAD=max(triton.next_power_of_2(n_xp), 16),
        W=w, W_PAD=triton.next_power_of_2(w), BLOCK_M=ROWS, BLOCK_N=block_n,
        BLOCK_K=max(16, min(block_k, triton.next_power_of_2(d))), IEEE=hidden.dtype == torch.float32,
        NORMED=normed, PDL=use_pdl, num_warps=num_warps, num_stages=num_stages, **launch_options,
    )

