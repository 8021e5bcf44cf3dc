"""Mamba-1 selective scan, the ground truth: the token-by-token recurrence in pure PyTorch.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t          (per channel d, state n)
    y_t = <C_t, h_t> + D * u_t,   out_t = y_t * silu(z_t)

Shapes follow mamba_ssm's ``selective_scan_fn``:
    u, delta, z: (b, d, l)    A: (d, n)    D, delta_bias: (d,)
    B, C: (b, n, l), or (b, g, n, l) with the d channels split into g equal groups
    initial_state, last_state: (b, d, n)

``selective_scan_sequential`` is the plain token-by-token loop, slow, for tests. The ``ref`` backend runs
``selective_scan_ref`` (``chunked.py``), the chunked scan with the same signature; both share
``prepare_delta`` and ``finish`` from here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def prepare_delta(delta: Tensor, delta_bias, delta_softplus) -> Tensor:
    """dt = delta (+ delta_bias) (softplus), fp32 (b, d, l)."""
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    return F.softplus(delta) if delta_softplus else delta  # (b, d, l)


def finish(y: Tensor, u32: Tensor, D, z, dtype) -> Tensor:
    """y (+ D u) (* silu(z)), cast to the input dtype."""
    if D is not None:
        y = y + u32 * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def selective_scan_sequential(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
):
    """Token-by-token selective scan (the textbook recurrence); slow, for tests."""
    b, d, l = u.shape
    u32 = u.float()
    delta = prepare_delta(delta, delta_bias, delta_softplus)
    dA = torch.exp(delta.unsqueeze(-1) * A.float()[:, None, :])  # (b, d, l, n)
    Bs, Cs = (_per_channel(M.float(), d) for M in (B, C))  # (b, 1 or d, l, n)
    dBu = (delta * u32).unsqueeze(-1) * Bs
    h = initial_state.float() if initial_state is not None else u32.new_zeros(b, d, A.shape[1])
    ys = []
    for a_t, x_t, c_t in zip(dA.unbind(2), dBu.unbind(2), Cs.unbind(2)):
        h = a_t * h + x_t
        ys.append((h * c_t).sum(-1))  # (b, d)
    out = finish(torch.stack(ys, dim=-1), u32, D, z, u.dtype)
    return (out, h) if return_last_state else out


def _per_channel(BC: Tensor, d: int) -> Tensor:
    """(b, n, l) -> (b, 1, l, n); (b, g, n, l) -> (b, d, l, n) with each group repeated over its channels."""
    if BC.dim() == 3:
        return BC.transpose(1, 2).unsqueeze(1)
    return BC.transpose(2, 3).repeat_interleave(d // BC.shape[1], dim=1)
