"""``local_attention`` forward as one Triton kernel: the absorbed algorithm (``absorbed.py``, its reference)
with nothing but the output written to memory.

A program takes BQ queries of one image and one head (width hd). Pass 1 runs over the feature width d_kv in
blocks of BK: it projects the queries into the feature space (q_h W_kh, a (BQ, hd) x (hd, BK) product) and
dots each query's projection with each key of its own slice (at most L keys, gathered row by row: consecutive
queries own consecutive keys), accumulating the (BQ, L) scores. The slice softmax follows in registers. Pass 2
runs over d_kv again: each query's weighted sum of its slice's features (BQ, BK) times W_vh (BK, hd)
accumulates the output. No (q, p) score matrix and no (b, q, h, d_kv) intermediate exist.

Slice bounds come from the slices' (base, extra) (``slices.py``, q <= p): start_i = i base + min(i, extra),
length_i = base + (i < extra). With one key a query (q >= p) there are no scores: the absorbed op's own path.

The backward recomputes the absorbed algorithm under autograd (its gradients; the absorbed module docstring
says which parameters get none), so a training step can take this forward.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from qmamba.ops.local_attention.absorbed import local_attention_absorbed
from qmamba.ops.local_attention.slices import local_slices

# queries and features per program step; not yet tuned (benchmarks/local_attention_tiles.py sweeps them). Where
# BLOCK_Q leaves fewer than two programs per multiprocessor (batch 1), blocks of 16 queries make more programs.
BLOCK_Q, BLOCK_K = 32, 64


def runs_here(t: Tensor) -> bool:
    """Whether the kernel can run on ``t``'s device: CUDA, or Triton's interpreter for CPU tensors."""
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def local_attention_fused(q: Tensor, kv: Tensor, k_weight: Tensor, k_bias: Tensor | None, v_weight: Tensor,
                          v_bias: Tensor | None, n_heads: int) -> Tensor:
    """Arguments and result as ``local_attention_naive`` (q (b, q, d), kv (b, p, d_kv), weights (d, d_kv)
    -> (b, q, d)). Where the kernel cannot run, and with one key a query, the absorbed algorithm."""
    slices = local_slices(q.shape[1], kv.shape[1])
    if slices.max_length == 1 or not runs_here(q):
        return local_attention_absorbed(q, kv, k_weight, k_bias, v_weight, v_bias, n_heads)
    tensors = [t for t in (q, kv, k_weight, k_bias, v_weight, v_bias) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _FusedLocalAttention.apply(q, kv, k_weight, k_bias, v_weight, v_bias, n_heads)
    return fused_forward(q, kv, k_weight, v_weight, v_bias, n_heads)


class _FusedLocalAttention(torch.autograd.Function):
    """The kernel's forward; the absorbed algorithm's gradients, recomputed."""

    @staticmethod
    def forward(ctx, q, kv, k_weight, k_bias, v_weight, v_bias, n_heads):
        ctx.save_for_backward(q, kv, k_weight, k_bias, v_weight, v_bias)
        ctx.n_heads = n_heads
        return fused_forward(q, kv, k_weight, v_weight, v_bias, n_heads)

    @staticmethod
    def backward(ctx, grad):
        inputs = [None if t is None else t.detach().requires_grad_(t.requires_grad) for t in ctx.saved_tensors]
        wanted = [t for t in inputs if t is not None and t.requires_grad]
        with torch.enable_grad():
            out = local_attention_absorbed(*inputs, ctx.n_heads)
        grads = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True))
        return (*(next(grads) if t is not None and t.requires_grad else None for t in inputs), None)


def fused_forward(q: Tensor, kv: Tensor, k_weight: Tensor, v_weight: Tensor, v_bias: Tensor | None,
                  n_heads: int, block_q: int | None = None, block_k: int | None = None,
                  num_warps: int = 4) -> Tensor:
    """The kernel: q (b, q, d), kv (b, p, d_kv), k_weight / v_weight (d, d_kv), v_bias (d,) -> (b, q, d).
    ``block_q`` / ``block_k``: queries and features per program step (powers of two >= 16; defaults
    ``_block_q`` and ``BLOCK_K``); ``num_warps``: the program's warps (``benchmarks/local_attention_tiles.py``)."""
    b, n, d = q.shape
    p, d_kv = kv.shape[1], kv.shape[2]
    hd = d // n_heads
    base, extra = divmod(p, n)
    q, kv, k_weight, v_weight = (t.contiguous() for t in (q, kv, k_weight, v_weight))
    out = torch.empty_like(q)  # (b, q, d)
    block_q = block_q or _block_q(b, n, n_heads, q.device)
    grid = (triton.cdiv(n, block_q), n_heads, b)
    local_attention_fwd[grid](
        q, kv, k_weight, v_weight, v_bias if v_bias is not None else q, out,
        n, d_kv, hd, q.stride(0), q.stride(1), kv.stride(0), kv.stride(1), k_weight.stride(0), out.stride(0),
        out.stride(1), hd**-0.5,
        BASE=base, EXTRA=extra, L=local_slices(n, p).max_length,
        LP=triton.next_power_of_2(local_slices(n, p).max_length), BQ=block_q,
        BK=max(16, min(block_k or BLOCK_K, triton.next_power_of_2(d_kv))), HDP=max(16, triton.next_power_of_2(hd)),
        HAS_BV=v_bias is not None, IEEE=q.dtype == torch.float32, num_warps=num_warps)
    return out


def _block_q(b: int, n: int, n_heads: int, device: torch.device) -> int:
    """BLOCK_Q queries a program, or 16 where that leaves fewer than two programs per multiprocessor."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
    block = max(16, min(BLOCK_Q, triton.next_power_of_2(n)))
    return 16 if b * n_heads * triton.cdiv(n, block) < 2 * sms else block


@triton.jit
def local_attention_fwd(q_ptr, kv_ptr, wk_ptr, wv_ptr, bv_ptr, out_ptr, Q, DKV, HD,
                        sq_b, sq_q, skv_b, skv_p, sw, so_b, so_q, scale,
                        BASE: tl.constexpr, EXTRA: tl.constexpr, L: tl.constexpr, LP: tl.constexpr,
                        BQ: tl.constexpr, BK: tl.constexpr, HDP: tl.constexpr, HAS_BV: tl.constexpr,
                        IEEE: tl.constexpr):
    pid_q, h, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rq = pid_q * BQ + tl.arange(0, BQ)  # (BQ,) this program's queries
    qm = rq < Q
    re = tl.arange(0, HDP)  # (HDP,) the head's channels
    em = re < HD
    start = rq * BASE + tl.minimum(rq, EXTRA)  # (BQ,) each query's first key
    length = BASE + (rq < EXTRA).to(tl.int32)  # (BQ,) and its number of keys
    rt = tl.arange(0, LP)  # (LP,) key positions within a slice
    qt = tl.load(q_ptr + b * sq_b + rq[:, None] * sq_q + (h * HD + re)[None, :],
                 mask=qm[:, None] & em[None, :], other=0.0)  # (BQ, HDP)
    kv_b = kv_ptr + b * skv_b
    # pass 1: scores s[i, t] = (q_i W_k) . x_{start_i + t}, over blocks of the feature width
    s = tl.zeros((BQ, LP), dtype=tl.float32)
    for k0 in range(0, DKV, BK):
        rk = k0 + tl.arange(0, BK)
        km = rk < DKV
        wk = tl.load(wk_ptr + (h * HD + re)[:, None] * sw + rk[None, :], mask=em[:, None] & km[None, :],
                     other=0.0)  # (HDP, BK)
        if IEEE:
            qk = tl.dot(qt, wk, input_precision="ieee")  # (BQ, BK)
        else:
            qk = tl.dot(qt, wk)
        for t in tl.static_range(L):
            x = tl.load(kv_b + (start + t)[:, None] * skv_p + rk[None, :],
                        mask=(qm & (t < length))[:, None] & km[None, :], other=0.0)  # (BQ, BK)
            s += tl.where(rt[None, :] == t, tl.sum(qk * x.to(tl.float32), axis=1)[:, None], 0.0)
    valid = rt[None, :] < length[:, None]  # (BQ, LP)
    s = tl.where(valid, s * scale, float("-inf"))
    e = tl.where(valid, tl.exp(s - tl.max(s, axis=1)[:, None]), 0.0)
    w = e / tl.sum(e, axis=1)[:, None]  # (BQ, LP): the slice softmax
    # pass 2: out_i = (sum_t w[i, t] x_{start_i + t}) W_v^T (+ b_v), over blocks of the feature width
    acc = tl.zeros((BQ, HDP), dtype=tl.float32)
    for k0 in range(0, DKV, BK):
        rk = k0 + tl.arange(0, BK)
        km = rk < DKV
        y = tl.zeros((BQ, BK), dtype=tl.float32)
        for t in tl.static_range(L):
            x = tl.load(kv_b + (start + t)[:, None] * skv_p + rk[None, :],
                        mask=(qm & (t < length))[:, None] & km[None, :], other=0.0)  # (BQ, BK)
            y += tl.sum(tl.where(rt[None, :] == t, w, 0.0), axis=1)[:, None] * x.to(tl.float32)
        wv = tl.load(wv_ptr + (h * HD + re)[None, :] * sw + rk[:, None], mask=km[:, None] & em[None, :],
                     other=0.0)  # (BK, HDP)
        if IEEE:
            acc += tl.dot(y, wv, input_precision="ieee")
        else:
            acc += tl.dot(y.to(wv.dtype), wv)
    if HAS_BV:
        acc += tl.load(bv_ptr + h * HD + re, mask=em, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + b * so_b + rq[:, None] * so_q + (h * HD + re)[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=qm[:, None] & em[None, :])

