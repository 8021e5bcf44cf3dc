"""Mamba-1 selective scan, pure PyTorch.

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t          (per channel d, state n)
    y_t = <C_t, h_t> + D * u_t,   out_t = y_t * silu(z_t)

Shapes follow mamba_ssm's ``selective_scan_fn``:
    u, delta, z: (b, d, l)    A: (d, n)    D, delta_bias: (d,)
    B, C: (b, n, l), or (b, g, n, l) with the d channels split into g equal groups
    initial_state, last_state: (b, d, n)

``selective_scan_ref`` is the chunked scan used for training and prefill on any device: the
sequence is cut into chunks, every chunk is scanned at once (a loop over the positions of one
chunk, parallel over all chunks), then the chunk-entry states are carried across chunks.
``selective_scan_sequential`` is the plain token-by-token loop, kept as the ground truth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _discretize(u, delta, A, B, delta_bias, delta_softplus):
    """fp32 inputs and the discretised (dA, dBu), each (b, d, l, n)."""
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    d = u.shape[1]
    dA = torch.exp(delta.unsqueeze(-1) * A.float()[:, None, :])  # (b, d, l, n)
    dBu = (delta * u).unsqueeze(-1) * _per_channel(B.float(), d)  # (b, d, l, n)
    return u, dA, dBu


def _per_channel(BC: Tensor, d: int) -> Tensor:
    """(b, n, l) -> (b, 1, l, n); (b, g, n, l) -> (b, d, l, n) with each group repeated over its channels."""
    if BC.dim() == 3:
        return BC.transpose(1, 2).unsqueeze(1)
    g = BC.shape[1]
    return BC.transpose(2, 3).repeat_interleave(d // g, dim=1)


def _output(h: Tensor, C: Tensor, u: Tensor, D, z, dtype) -> Tensor:
    """y = <C, h> (+ D u) (* silu(z)), cast to the input dtype; h: (b, d, l, n)."""
    y = (h * _per_channel(C.float(), u.shape[1])).sum(-1)  # (b, d, l)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def linear_scan_chunked(dA: Tensor, dBu: Tensor, h0: Tensor | None, chunk: int | None = None) -> Tensor:
    """All states of h_t = dA_t * h_{t-1} + dBu_t along dim 2; dA, dBu: (b, d, l, n), h0: (b, d, n)."""
    b, d, l, n = dA.shape
    T = chunk or max(8, 2 ** round(math.log2(max(l, 1)) / 2))  # about sqrt(l) positions per chunk
    nc = -(-l // T)
    pad = nc * T - l
    if pad:
        dA = F.pad(dA, (0, 0, 0, pad), value=1.0)
        dBu = F.pad(dBu, (0, 0, 0, pad))
    a = dA.reshape(b, d, nc, T, n).permute(3, 0, 1, 2, 4)  # (T, b, d, nc, n)
    x = dBu.reshape(b, d, nc, T, n).permute(3, 0, 1, 2, 4)
    hs, ps = [x[0]], [a[0]]
    for t in range(1, T):  # every chunk at once: states from a zero start, and decay products
        hs.append(a[t] * hs[-1] + x[t])
        ps.append(a[t] * ps[-1])
    h_local, p_local = torch.stack(hs), torch.stack(ps)  # (T, b, d, nc, n)
    entry = [h0.float() if h0 is not None else torch.zeros_like(h_local[0, :, :, 0])]
    for c in range(nc - 1):  # carry the state across chunk boundaries
        entry.append(p_local[-1, :, :, c] * entry[-1] + h_local[-1, :, :, c])
    h = h_local + p_local * torch.stack(entry, dim=2)  # (T, b, d, nc, n)
    return h.permute(1, 2, 3, 0, 4).reshape(b, d, nc * T, n)[:, :, :l]


def selective_scan_ref(
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
    chunk_size: int | None = None,
):
    """Chunked selective scan; returns out (b, d, l) and, if asked, last_state (b, d, n) in fp32."""
    u32, dA, dBu = _discretize(u, delta, A, B, delta_bias, delta_softplus)
    h = linear_scan_chunked(dA, dBu, initial_state, chunk_size)  # (b, d, l, n)
    out = _output(h, C, u32, D, z, u.dtype)
    return (out, h[:, :, -1]) if return_last_state else out


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
    u32, dA, dBu = _discretize(u, delta, A, B, delta_bias, delta_softplus)
    b, d, l, n = dA.shape
    h = initial_state.float() if initial_state is not None else u32.new_zeros(b, d, n)
    states = []
    for t in range(l):
        h = dA[:, :, t] * h + dBu[:, :, t]
        states.append(h)
    hs = torch.stack(states, dim=2)  # (b, d, l, n)
    out = _output(hs, C, u32, D, z, u.dtype)
    return (out, h) if return_last_state else out
