"""``local_attention`` without projecting the keys or values: the key and value weights absorbed into the
queries and the outputs.

For head h (width hd = d / h), query i and a key j of its slice S_i:

    score_ijh = q_ih . (W_kh x_j + b_kh) / sqrt(hd) = x_j . (W_kh^T q_ih) / sqrt(hd)  +  q_ih . b_kh / sqrt(hd)

The last term does not depend on j, so it cancels in the softmax over S_i: ``k_bias`` is not read (its
gradient is exactly zero in the reference too). With w_ijh = softmax over S_i, summing to 1:

    out_ih = sum_j w_ijh (W_vh x_j + b_vh) = W_vh (sum_j w_ijh x_j) + b_vh

So a query costs q_ih -> W_kh^T q_ih (hd x d_kv per head: d x d_kv in all), its slice's scores, the weighted
sum of its raw features, and W_vh of that (again d x d_kv): q x d x d_kv twice in place of p x d_kv x d twice
for k and v, and no (q, p) score matrix. Slices of one key (q >= p, or p < 2q for the shorter run) have
weight exactly 1: their output is v_proj of that key, with no scores at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qmamba.ops.local_attention.slices import LocalSlices, Run, local_slices


def local_attention_absorbed(q: Tensor, kv: Tensor, k_weight: Tensor, k_bias: Tensor | None, v_weight: Tensor,
                             v_bias: Tensor | None, n_heads: int) -> Tensor:
    """Arguments and result as ``local_attention_naive`` (q (b, q, d), kv (b, p, d_kv), weights (d, d_kv)
    -> (b, q, d)); ``k_bias`` is accepted for the common signature and cancels (module docstring).
    Differentiable through autograd; no loop over queries (at most two runs of slices)."""
    slices = local_slices(q.shape[1], kv.shape[1])
    if slices.max_length == 1:
        return _one_key_each(kv, v_weight, v_bias, slices)
    parts = [_run(q[:, r.query:r.query + r.n], kv[:, r.key:r.key + r.n * r.length], r, k_weight, v_weight,
                  v_bias, n_heads) for r in slices.runs]
    return parts[0] if len(parts) == 1 else torch.cat(parts, 1)  # (b, q, d)


def _one_key_each(kv: Tensor, v_weight: Tensor, v_bias: Tensor | None, slices: LocalSlices) -> Tensor:
    """Every query reads one key: its output is that key's value (b, q, d), from the p keys' values."""
    v = F.linear(kv, v_weight, v_bias)  # (b, p, d)
    if slices.n_queries == slices.n_keys:
        return v  # query i owns key i
    return v.index_select(1, slices.owners(kv.device))  # (b, q, d)


def _run(q: Tensor, x: Tensor, run: Run, k_weight: Tensor, v_weight: Tensor, v_bias: Tensor | None,
         n_heads: int) -> Tensor:
    """One run of ``run.n`` queries q (b, n, d), each reading its own ``run.length`` adjacent keys of
    x (b, n * L, d_kv) -> (b, n, d)."""
    if run.length == 1:
        return F.linear(x, v_weight, v_bias)  # (b, n, d): weight 1 on the one key
    b, n, d = q.shape
    hd = d // n_heads
    x = x.unflatten(1, (n, run.length))  # (b, n, L, d_kv)
    qh = q.unflatten(-1, (n_heads, hd)) * hd**-0.5  # (b, n, h, hd)
    qk = torch.einsum("bnhe,hec->bnhc", qh, k_weight.unflatten(0, (n_heads, hd)))  # (b, n, h, d_kv)
    scores = qk @ x.transpose(-1, -2)  # (b, n, h, L)
    w = scores.to(torch.promote_types(scores.dtype, torch.float32)).softmax(-1).to(x.dtype)  # (b, n, h, L)
    y = w @ x  # (b, n, h, d_kv): each head's weighted sum of the raw features
    out = torch.einsum("bnhc,hec->bnhe", y, v_weight.unflatten(0, (n_heads, hd))).flatten(-2)  # (b, n, d)
    return out if v_bias is None else out + v_bias
