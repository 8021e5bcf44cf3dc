"""Mamba-1 selective scan, chunked, in pure PyTorch with a hand-written backward: the ``ref`` backend (the CPU
and fallback training path). ``selective_scan_ref`` has mamba_ssm's ``selective_scan_fn`` signature (shapes in
``naive.py``); chunks of about sqrt(l) steps unless ``chunk_size`` is given.

    h_t = exp(dt_t A) * h_{t-1} + du_t B_t        y_t = <C_t, h_t>        (du = dt * u)

The sequence is cut into nc chunks of T steps and every tensor of the state's size lives in
*chunk layout* (T, b, nc, d, n): step i of chunk c at [i, :, c]. A loop over the T steps runs all
chunks at once on contiguous (b, nc, d, n) slices; the state entering each chunk comes from a
short loop over the chunks (using the chunk's total decay exp(A * sum dt), a small tensor).

The whole op is one autograd node, so a training step touches the state-sized tensors few times:
forward writes dA = exp(dt A) and the states H (both kept for the backward), the backward writes
one state-sized gradient G and reuses it in place. Contractions over the state (y, dL/du, dL/dB,
dL/dC) run slice by slice or as batched matrix products, never as broadcast temporaries.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from qmamba.ops.selective_scan.naive import finish, prepare_delta


def to_chunks(t: Tensor, T: int) -> Tensor:
    """(b, c, l) -> (T, b, nc, c), zero-padded to nc * T positions."""
    b, c, l = t.shape
    nc = -(-l // T)
    t = F.pad(t, (0, nc * T - l))
    return t.view(b, c, nc, T).permute(3, 0, 2, 1).contiguous()


def from_chunks(t: Tensor, l: int) -> Tensor:
    """(T, b, nc, c) -> (b, c, l), padding dropped."""
    T, b, nc, c = t.shape
    return t.permute(1, 3, 2, 0).reshape(b, c, nc * T)[:, :, :l]


def _contract_state(X: Tensor, V: Tensor) -> Tensor:
    """sum_n X[..., d, n] * V[..., group of d, n]: X (T, b, nc, d, n), V (T, b, nc, g, n) or (d, n) -> (T, b, nc, d)."""
    T, b, nc, d, n = X.shape
    g = V.shape[3] if V.dim() == 5 else 1
    out = X.new_empty(T, b, nc, d)
    tmp = X.new_empty(b, nc, g, d // g, n)  # one step's product, reused
    per_step = V.dim() == 5
    Vs = V.view(T, b, nc, g, 1, n) if per_step else V.view(g, d // g, n)
    for t in range(T):
        torch.mul(X[t].view(b, nc, g, d // g, n), Vs[t] if per_step else Vs, out=tmp)
        torch.sum(tmp.view(b, nc, d, n), -1, out=out[t])
    return out


def _reduce_channels(w: Tensor, X: Tensor, g: int) -> Tensor:
    """sum over each group's channels of w[..., d] X[..., d, n]: (T, b, nc, d), (T, b, nc, d, n) -> (T, b, nc, g, n)."""
    T, b, nc, d, n = X.shape
    return torch.matmul(w.view(T, b, nc, g, 1, d // g), X.view(T, b, nc, g, d // g, n)).view(T, b, nc, g, n)


def _outer(w: Tensor, V: Tensor) -> Tensor:
    """w[..., d] * V[..., group of d, n]: (T, b, nc, d), (T, b, nc, g, n) -> (T, b, nc, d, n), a new tensor."""
    T, b, nc, d = w.shape
    g, n = V.shape[3:]
    return (w.view(T, b, nc, g, d // g, 1) * V.view(T, b, nc, g, 1, n)).view(T, b, nc, d, n)


def _scan_(X: Tensor, dA: Tensor, entry: Tensor, last_local: Tensor, decay: Tensor, reverse: bool) -> Tensor:
    """Run the recurrence in place over every step, chunks joined; returns what enters each chunk (b, nc, d, n).

    Forward: X[t] += dA[t] * X[t-1]; ``entry`` (b, d, n) is the state before the first chunk.
    Reverse: X[t] += dA[t+1] * X[t+1]; ``entry`` is added at the last step of the last chunk.
    ``last_local`` is each chunk's final value from a zero entry (``_local_last``) and ``decay`` what a
    chunk multiplies its entry by on the way to that final value."""
    T, nc = X.shape[0], X.shape[2]
    E = torch.empty_like(last_local)
    order = list(range(nc - 1, -1, -1) if reverse else range(nc))
    E[:, order[0]] = entry
    for prev, c in itertools.pairwise(order):
        leaving = last_local[:, prev] + decay[:, prev] * E[:, prev]
        E[:, c] = dA[0, :, prev] * leaving if reverse else leaving  # reverse: h[T-1, c] -> h[0, prev] by dA[0, prev]
    if reverse:
        X[T - 1].add_(E)
        for t in range(T - 2, -1, -1):
            X[t].addcmul_(dA[t + 1], X[t + 1])
    else:
        X[0].addcmul_(dA[0], E)
        for t in range(1, T):
            X[t].addcmul_(dA[t], X[t - 1])
    return E


def _local_last(X: Tensor, dA: Tensor, reverse: bool) -> Tensor:
    """Each chunk's final value of the recurrence from a zero entry, (b, nc, d, n); X is not changed."""
    T = X.shape[0]
    steps = range(T - 2, -1, -1) if reverse else range(1, T)
    s = (X[T - 1] if reverse else X[0]).clone()
    for t in steps:
        torch.addcmul(X[t], dA[t + 1] if reverse else dA[t], s, out=s)
    return s


class ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dt, du, A, B, C, h0, T: int):
        # dt, du: (b, d, l) fp32;  A: (d, n);  B, C: (b, g, n, l);  h0: (b, d, n) or None
        b, d, l = dt.shape
        n = A.shape[1]
        dt_c, du_c = to_chunks(dt, T), to_chunks(du, T)  # (T, b, nc, d); padding: dt 0 (decay 1), du 0
        B_c, C_c = (to_chunks(M.flatten(1, 2), T).unflatten(3, M.shape[1:3]) for M in (B, C))  # (T, b, nc, g, n)
        dA = (dt_c[..., None] * A).exp_()  # (T, b, nc, d, n)
        H = _outer(du_c, B_c)  # dBu, scanned into the states in place
        decay = torch.exp(dt_c.sum(0)[..., None] * A)  # (b, nc, d, n): a chunk's total decay
        last_local = _local_last(H, dA, reverse=False)
        zero = dt.new_zeros(b, d, n)
        E = _scan_(H, dA, h0 if h0 is not None else zero, last_local, decay, reverse=False)
        last = last_local[:, -1] + decay[:, -1] * E[:, -1]  # padding leaves the state unchanged
        y = _contract_state(H, C_c)  # (T, b, nc, d)
        ctx.save_for_backward(dt_c, du_c, A, B_c, C_c, dA, H, E)
        ctx.has_h0 = h0 is not None
        return from_chunks(y, l), last

    @staticmethod
    def backward(ctx, gy, glast):
        dt_c, du_c, A, B_c, C_c, dA, H, E = ctx.saved_tensors
        T, b, nc, d = dt_c.shape
        l, n = gy.shape[2], A.shape[1]
        gy_c = to_chunks(gy.to(dt_c.dtype), T)
        gC = _reduce_channels(gy_c, H, C_c.shape[3])
        G = _outer(gy_c, C_c)  # dL/dH from y; then the reverse scan makes it dL/dH in full
        if glast is not None:
            G[T - 1, :, nc - 1] += glast
        ahead = torch.exp(dt_c[1:].sum(0)[..., None] * A)  # (b, nc, d, n): decay over steps 1..T-1 of a chunk
        last_local = _local_last(G, dA, reverse=True)
        _scan_(G, dA, dt_c.new_zeros(b, d, n), last_local, ahead, reverse=True)
        gh0 = dA[0, :, 0] * G[0, :, 0] if ctx.has_h0 else None
        gdu = _contract_state(G, B_c)
        gB = _reduce_channels(du_c, G, B_c.shape[3])
        G.mul_(dA)  # dL/d(dt A) = G[t] * h[t-1] * dA[t], h[-1] being the chunk's entry state
        G[1:].mul_(H[:-1])
        G[0].mul_(E)
        gdt = _contract_state(G, A)
        G.mul_(dt_c[..., None])
        gA = G.sum((0, 1, 2))
        back = lambda t: from_chunks(t.flatten(3), l).unflatten(1, t.shape[3:])  # noqa: E731
        return from_chunks(gdt, l), from_chunks(gdu, l), gA, back(gB), back(gC), gh0, None


def chunked_scan(dt: Tensor, du: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, T: int):
    """y (b, d, l) and the last state (b, d, n), fp32; B and C (b, g, n, l). See the module docstring."""
    return ChunkedScan.apply(dt.contiguous(), du.contiguous(), A.contiguous(), B, C, h0, T)


def _chunk_size(l: int, chunk_size: int | None) -> int:
    return chunk_size or max(8, 2 ** round(math.log2(max(l, 1)) / 2))  # about sqrt(l) steps per chunk


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
    b, d, l = u.shape
    u32 = u.float()
    delta = prepare_delta(delta, delta_bias, delta_softplus)
    B4, C4 = (M.float() if M.dim() == 4 else M.float().unsqueeze(1) for M in (B, C))  # (b, g, n, l)
    h0 = initial_state.float() if initial_state is not None else None
    y, last = chunked_scan(delta, delta * u32, A.float(), B4, C4, h0, _chunk_size(l, chunk_size))
    out = finish(y, u32, D, z, u.dtype)
    return (out, last) if return_last_state else out
