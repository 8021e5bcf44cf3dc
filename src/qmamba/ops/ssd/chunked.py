"""Mamba-2 SSD scan, chunked, in pure PyTorch: the ``ref`` backend (autograd through PyTorch ops).

Inside a chunk of ``chunk_size`` steps the quadratic, attention-like form (C B^T masked by the segment sums
of dt A); between chunks a recurrence over the chunk states. Shapes and the recurrence in ``naive.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qmamba.ops.ssd.naive import finish, heads, prepare_dt


def segsum(a: Tensor) -> Tensor:
    """(..., T) -> (..., T, T): out[i, j] = a[j+1] + ... + a[i] for j <= i, -inf above the diagonal."""
    T = a.shape[-1]
    x = a.unsqueeze(-1).expand(*a.shape, T)  # x[..., i, j] = a[i]
    below = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device), diagonal=-1)
    x = x.masked_fill(~below, 0.0)
    out = torch.cumsum(x, dim=-2)
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool, device=a.device))
    return out.masked_fill(~keep, float("-inf"))


def ssd_chunk_scan_ref(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    initial_states: Tensor | None = None,
    dt_softplus: bool = False,
    dt_limit: tuple[float, float] = (0.0, float("inf")),
    return_final_states: bool = False,
):
    """Chunked SSD; returns y (b, l, h, p) and, if asked, final_states (b, h, p, n) in fp32."""
    b, l, h, p = x.shape
    T = chunk_size
    nc = -(-l // T)
    pad = nc * T - l
    dt = prepare_dt(dt, dt_bias, dt_softplus, dt_limit)  # (b, l, h)
    xdt = x.float() * dt.unsqueeze(-1)  # (b, l, h, p)
    Bh, Ch = heads(B, h), heads(C, h)  # (b, l, h, n)
    Adt = dt * A.float()  # (b, l, h)
    if pad:  # padded steps: no decay, no input
        xdt, Bh, Ch = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (xdt, Bh, Ch))
        Adt = F.pad(Adt, (0, 0, 0, pad))
    xdt, Bh, Ch = (t.reshape(b, nc, T, h, -1) for t in (xdt, Bh, Ch))  # (b, c, T, h, .)
    Adt = Adt.reshape(b, nc, T, h).permute(0, 3, 1, 2)  # (b, h, c, T)
    A_cum = torch.cumsum(Adt, dim=-1)  # (b, h, c, T)

    L = torch.exp(segsum(Adt))  # (b, h, c, T, T)
    y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Ch, Bh, L, xdt)

    decay_to_end = torch.exp(A_cum[..., -1:] - A_cum)  # (b, h, c, T)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bh, decay_to_end, xdt)  # (b, c, h, p, n)
    if initial_states is None:
        initial_states = states.new_zeros(b, 1, h, p, states.shape[-1])
    else:
        initial_states = initial_states.float().unsqueeze(1)
    states = torch.cat([initial_states, states], dim=1)  # (b, c+1, h, p, n)
    decay_chunk = torch.exp(segsum(F.pad(A_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    entry, final = states[:, :-1], states[:, -1]  # (b, c, h, p, n), (b, h, p, n)

    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Ch, entry, torch.exp(A_cum))
    y = (y_diag + y_off).reshape(b, nc * T, h, p)[:, :l]
    y = finish(y, x, D, z, x.dtype)
    return (y, final) if return_final_states else y
