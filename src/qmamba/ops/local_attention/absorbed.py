"""``local_attention`` without projecting the keys or values: the key and value weights absorbed into the
queries and the outputs.

For head h (width hd = d / h), query i and a key j of its slice S_i:

    score_ijh = q_ih . (W_kh x_j + b_kh) / sqrt(hd) = x_j . (W_kh^T q_ih) / sqrt(hd)  +  q_ih . b_kh / sqrt(hd)

The last term does not depend on j, so it cancels in the softmax over S_i: ``k_bias`` is not read (its
gradient is exactly zero in the reference too). With w_ijh = softmax over S_i, summing to 1:

    out_ih = sum_j w_ijh (W_vh x_j + b_vh) = W_vh (sum_j w_ijh x_j) + b_vh

So a query costs W_kh^T q_ih (d x d_kv multiply-adds over its heads), its slice's scores, the weighted sum of
its raw features, and W_vh of that (d x d_kv again): q x d x d_kv twice in place of p x d_kv x d twice for k
and v, and no (q, p) score matrix. The price is two (b, q, h, d_kv) intermediates (W_k^T q and the weighted
sums), h d_kv / d times wider than k and v per row. Each product is one batched matmul: over heads for the
weights (layout (h, b q, .)), over queries for the slices (layout (b q, h, .)); the two layouts are transposed
views of each other, so no intermediate is copied. Slices of one key (q >= p) have weight exactly 1: their
output is v_proj of that key, with no scores at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qmamba.ops.local_attention.slices import LocalSlices, local_slices


def local_attention_absorbed(q: Tensor, kv: Tensor, k_weight: Tensor, k_bias: Tensor | None, v_weight: Tensor,
                             v_bias: Tensor | None, n_heads: int) -> Tensor:
    """Arguments and result as ``local_attention_naive`` (q (b, q, d), kv (b, p, d_kv), weights (d, d_kv)
    -> (b, q, d)); ``k_bias`` is accepted for the common signature and cancels (module docstring).
    Differentiable through autograd; no loop over queries."""
    b, n, d = q.shape
    slices = local_slices(n, kv.shape[1])
    if slices.max_length == 1:
        return _one_key_each(kv, v_weight, v_bias, slices)
    h, hd = n_heads, d // n_heads
    x = _slice_keys(kv, slices)  # (b q, L, d_kv)
    qh = (q * hd**-0.5).reshape(b * n, h, hd).transpose(0, 1)  # (h, b q, hd)
    qk = torch.bmm(qh, k_weight.view(h, hd, -1))  # (h, b q, d_kv): W_kh^T q_ih / sqrt(hd)
    scores = torch.bmm(qk.transpose(0, 1), x.transpose(1, 2))  # (b q, h, L)
    w = _slice_softmax(scores.view(b, n, h, -1), slices).view(b * n, h, -1)  # (b q, h, L)
    y = torch.bmm(w, x)  # (b q, h, d_kv): each head's weighted sum of its slice's raw features
    wv = v_weight.view(h, hd, -1).transpose(1, 2)  # (h, d_kv, hd)
    yt = y.transpose(0, 1)  # (h, b q, d_kv)
    out = torch.bmm(yt, wv) if v_bias is None else torch.baddbmm(v_bias.view(h, 1, hd), yt, wv)  # (h, b q, hd)
    return out.transpose(0, 1).reshape(b, n, d)  # (b, q, d)


def _one_key_each(kv: Tensor, v_weight: Tensor, v_bias: Tensor | None, slices: LocalSlices) -> Tensor:
    """Every query reads one key: its output is that key's value (b, q, d), from the p keys' values."""
    v = F.linear(kv, v_weight, v_bias)  # (b, p, d)
    if slices.n_queries == slices.n_keys:
        return v  # query i owns key i
    return v.index_select(1, slices.owners(kv.device))  # (b, q, d)


def _slice_keys(kv: Tensor, slices: LocalSlices) -> Tensor:
    """kv (b, p, d_kv) -> (b q, L, d_kv): each query's keys, padded to L (a view when q divides p)."""
    b, p, c = kv.shape
    if not slices.uniform:
        kv = kv.index_select(1, slices.padded_index(kv.device))  # (b, q L, d_kv)
    return kv.reshape(b * slices.n_queries, slices.max_length, c)


def _slice_softmax(scores: Tensor, slices: LocalSlices) -> Tensor:
    """scores (b, q, h, L) -> weights (b, q, h, L) in the scores' dtype: softmax in float32 at least over each
    query's keys, exactly 0 at the padding."""
    if not slices.uniform:
        scores = scores.masked_fill(slices.padding(scores.device)[:, None, :], float("-inf"))  # (b, q, h, L)
    return scores.softmax(-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(scores.dtype)
