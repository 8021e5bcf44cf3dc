"""Attention pieces of the query-based connectors: the local mask of the Q-Mamba paper (Figure 3),
cross-attention from queries to visual features, and self-attention among queries.

The local mask needs no mask tensor: ``CrossAttention.forward(..., local=True)`` runs ``ops.local_attention``,
the dense-mask SDPA by default or, chosen with ``use_local_attention("absorbed")``, an algorithm that reads each
query's slice of the keys only and never projects the keys or values (k_proj and v_proj absorbed into the queries
and outputs; the parameters stay as they are, so checkpoints load either way). Any other mask
(or none) runs through ``F.scaled_dot_product_attention`` with an explicit boolean mask (True = may attend).
``CrossAttention.forward(..., return_weights=True)`` is the one other path: the same math written out
(``attention_weights``) with the dense mask, which also returns the weights, for query attention maps; it gives
the same output as the other paths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmamba.ops.local_attention import local_attention, local_slices


def local_attention_mask(n_queries: int, n_keys: int, device=None) -> Tensor:
    """(q, k) bool mask: query i attends only to its own contiguous slice of the keys (raster order).

    q <= k: slices of k // q keys, the first k % q queries take one extra key, in order.
    q > k:  query i attends to key floor(i * k / q) alone.
    """
    q, k = n_queries, n_keys
    keys = torch.arange(k, device=device)
    if q > k:
        owner = torch.arange(q, device=device) * k // q  # (q,)
        return keys[None, :] == owner[:, None]
    base, extra = divmod(k, q)
    sizes = torch.full((q,), base, device=device) + (torch.arange(q, device=device) < extra)
    ends = torch.cumsum(sizes, 0)  # (q,)
    starts = ends - sizes
    return (keys[None, :] >= starts[:, None]) & (keys[None, :] < ends[:, None])


class CrossAttention(nn.Module):
    """Multi-head attention from queries (b, q, d) to keys/values (b, k, d_kv)."""

    def __init__(self, d: int, d_kv: int, n_heads: int, device=None, dtype=None):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"width {d} is not divisible by n_heads={n_heads}")
        fk = {"device": device, "dtype": dtype}
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d, d, **fk)
        self.k_proj = nn.Linear(d_kv, d, **fk)
        self.v_proj = nn.Linear(d_kv, d, **fk)
        self.out_proj = nn.Linear(d, d, **fk)

    def forward(self, x: Tensor, kv: Tensor, mask: Tensor | None = None, local: bool = False,
                return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x (b, q, d), kv (b, k, d_kv), mask (q, k) bool or None -> (b, q, d).

        ``local``: attend with ``local_attention_mask(q, k)`` (leave ``mask`` None), through ``ops.local_attention``.
        ``return_weights``: also the attention weights (b, h, q, k), from the written-out softmax instead of
        SDPA (slower; for attention maps). Masked keys get weight exactly 0 and every row sums to 1.
        """
        if local and mask is not None:
            raise ValueError("CrossAttention: give either local=True or a mask, not both")
        h = self.n_heads
        if local and not return_weights:
            y = local_attention(self.q_proj(x), kv, self.k_proj.weight, self.k_proj.bias, self.v_proj.weight,
                                self.v_proj.bias, h)  # (b, q, d)
            return self.out_proj(y)
        if local:
            mask = local_slices(x.shape[1], kv.shape[1]).mask(kv.device)  # (q, k)
        q = self.q_proj(x).unflatten(-1, (h, -1)).transpose(1, 2)  # (b, h, q, hd)
        k = self.k_proj(kv).unflatten(-1, (h, -1)).transpose(1, 2)  # (b, h, k, hd)
        v = self.v_proj(kv).unflatten(-1, (h, -1)).transpose(1, 2)
        if not return_weights:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (b, h, q, hd)
            return self.out_proj(y.transpose(1, 2).flatten(-2))
        w = attention_weights(q, k, mask)  # (b, h, q, k)
        y = w @ v  # (b, h, q, hd)
        return self.out_proj(y.transpose(1, 2).flatten(-2)), w


class SelfAttention(CrossAttention):
    """Multi-head self-attention among the queries (Q-Former's mixer); bidirectional unless ``causal``."""

    def __init__(self, d: int, n_heads: int, causal: bool = False, device=None, dtype=None):
        super().__init__(d, d, n_heads, device, dtype)
        self.causal = causal

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        mask = None
        if self.causal:
            n = x.shape[1]
            mask = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        return super().forward(x, x, mask)


def attention_weights(q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(hd) + mask): q (b, h, q, hd), k (b, h, k, hd), mask (q, k) bool -> (b, h, q, k).

    Scores are computed in float32 at least; keys outside the mask get exactly 0. A row with no allowed key
    (never made by ``local_attention_mask``) would be NaN, as in SDPA.
    """
    dtype = torch.promote_types(q.dtype, torch.float32)
    scores = q.to(dtype) @ k.to(dtype).transpose(-1, -2) / q.shape[-1] ** 0.5  # (b, h, q, k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1).to(q.dtype)


def attention_reference(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(hd) + mask) v written out, for tests; q (b, h, q, hd), k/v (b, h, k, hd)."""
    return attention_weights(q, k, mask) @ v
