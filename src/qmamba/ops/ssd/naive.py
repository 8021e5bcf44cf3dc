"""Mamba-2 state-space duality (SSD) scan, the ground truth: the token-by-token recurrence in pure PyTorch.

Per head h (scalar decay A_h), state (p, n):
    S_t = exp(dt_t * A) * S_{t-1} + dt_t * x_t B_t^T,    y_t = S_t C_t + D * x_t  (* silu(z_t))

Shapes follow mamba_ssm's ``mamba_chunk_scan_combined``:
    x, z: (b, l, h, p)   dt: (b, l, h)   A: (h,)   B, C: (b, l, g, n)   D: (h,) or (h, p)
    dt_bias: (h,)   initial_states, final_states: (b, h, p, n)

``ssd_sequential`` is the token-by-token loop, slow, for tests. The ``ref`` backend runs ``ssd_chunk_scan_ref``
(``chunked.py``); both share ``prepare_dt``, ``heads`` and ``finish`` from here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def prepare_dt(dt, dt_bias, dt_softplus, dt_limit):
    """dt (+ dt_bias) (softplus) clamped to ``dt_limit``, fp32 (b, l, h)."""
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    lo, hi = dt_limit
    if lo > 0.0 or hi < float("inf"):
        dt = dt.clamp(min=lo, max=hi)
    return dt  # (b, l, h)


def heads(BC: Tensor, h: int) -> Tensor:
    """(b, l, g, n) -> (b, l, h, n): each group serves h/g consecutive heads."""
    return BC.float().repeat_interleave(h // BC.shape[2], dim=2)


def finish(y, x, D, z, dtype):
    """y (+ D x) (* silu(z)), cast to ``dtype``."""
    if D is not None:
        Df = D.float()
        y = y + x.float() * (Df[:, None] if Df.dim() == 1 else Df)
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def ssd_sequential(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    initial_states: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
):
    """Token-by-token SSD recurrence; slow, for tests."""
    b, l, h, p = x.shape
    dt = prepare_dt(dt, dt_bias, dt_softplus, dt_limit)
    Bh, Ch = heads(B, h), heads(C, h)
    S = initial_states.float() if initial_states is not None else x.new_zeros(b, h, p, Bh.shape[-1]).float()
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A.float())[:, :, None, None]  # (b, h, 1, 1)
        S = decay * S + (dt[:, t, :, None] * x[:, t].float()).unsqueeze(-1) * Bh[:, t].unsqueeze(2)
        ys.append((S * Ch[:, t].unsqueeze(2)).sum(-1))  # (b, h, p)
    y = finish(torch.stack(ys, dim=1), x, D, z, x.dtype)
    return (y, S) if return_final_states else y
