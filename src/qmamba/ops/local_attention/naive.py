"""The ground truth of ``local_attention``: project every key and value, then dense masked attention.

This is the cross-attention the query blocks ran before the absorbed algorithm: k and v for all p keys
(p x d_kv x d multiply-adds each), and SDPA over the whole (q, p) score matrix with the local mask.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from qmamba.ops.local_attention.slices import local_slices


def local_attention_naive(q: Tensor, kv: Tensor, k_weight: Tensor, k_bias: Tensor | None, v_weight: Tensor,
                          v_bias: Tensor | None, n_heads: int) -> Tensor:
    """Local multi-head cross-attention before ``out_proj``.

    q (b, q, d): the projected queries (``q_proj`` applied); kv (b, p, d_kv): the features;
    k_weight, v_weight (d, d_kv), k_bias, v_bias (d,) or None: ``k_proj`` and ``v_proj``;
    -> (b, q, d): for each head h, softmax over query i's slice of q_ih . k_jh / sqrt(d / h), times v_jh.
    """

    def heads(t: Tensor) -> Tensor:
        return t.unflatten(-1, (n_heads, -1)).transpose(1, 2)  # (b, l, d) -> (b, h, l, hd)

    k = heads(F.linear(kv, k_weight, k_bias))  # (b, h, p, hd)
    v = heads(F.linear(kv, v_weight, v_bias))  # (b, h, p, hd)
    mask = local_slices(q.shape[1], kv.shape[1]).mask(kv.device)  # (q, p)
    y = F.scaled_dot_product_attention(heads(q), k, v, attn_mask=mask)  # (b, h, q, hd)
    return y.transpose(1, 2).flatten(-2)  # (b, q, d)
