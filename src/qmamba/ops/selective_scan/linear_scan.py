"""The chunked first-order linear recurrence under the selective scan, with a hand-written backward.

    h[t] = a[t] * h[t-1] + x[t]        elementwise, h[-1] = h0

Tensors are in *chunk layout* (T, b, d, nc, n): position t*... of the sequence is chunk c, step i
at index [i, :, :, c]. Inside a chunk the steps run one after another, all chunks at once (T
iterations of contiguous slices); then the state entering each chunk is carried across chunks
(nc iterations on (b, d, n)) and added with the chunk's decay products. The backward pass is the
same recurrence run in reverse: G[t] = dL/dh[t] + a[t+1] * G[t+1], da[t] = G[t] h[t-1], dx = G.
Nothing but a, h and the chunk entry states is kept for the backward.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def scan_chunks(a: Tensor, x: Tensor, h0: Tensor | None, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """All states (T, b, d, nc, n) and the state entering each chunk (b, d, nc, n)."""
    T, nc = a.shape[0], a.shape[3]
    steps = range(T - 1, -1, -1) if reverse else range(T)
    H, P = torch.empty_like(x), torch.empty_like(a)
    first, *rest = steps
    H[first], P[first] = x[first], a[first]
    prev = first
    for t in rest:  # every chunk at once, from a zero state: H = local states, P = decay products
        torch.addcmul(x[t], a[t], H[prev], out=H[t])
        torch.mul(a[t], P[prev], out=P[t])
        prev = t
    last = prev
    E = torch.empty_like(H[0])  # (b, d, nc, n): state entering each chunk
    chunks = range(nc - 1, -1, -1) if reverse else range(nc)
    c0, *crest = chunks
    E[:, :, c0] = 0 if h0 is None else h0
    cprev = c0
    for c in crest:
        torch.addcmul(H[last, :, :, cprev], P[last, :, :, cprev], E[:, :, cprev], out=E[:, :, c])
        cprev = c
    H.addcmul_(P, E.unsqueeze(0))
    return H, E


class LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, x: Tensor, h0: Tensor | None) -> Tensor:
        H, E = scan_chunks(a, x, h0)
        ctx.save_for_backward(a, H, E)
        ctx.has_h0 = h0 is not None
        return H

    @staticmethod
    def backward(ctx, gH: Tensor):
        a, H, E = ctx.saved_tensors
        a_next = torch.empty_like(a)  # the decay applied to h[t] to reach h[t+1]
        a_next[:-1] = a[1:]
        a_next[-1, :, :, :-1] = a[0, :, :, 1:]
        a_next[-1, :, :, -1] = 0
        G, _ = scan_chunks(a_next, gH.contiguous(), None, reverse=True)
        ga = torch.empty_like(G)  # G[t] * h[t-1], h[t-1] being the previous step or the chunk's entry state
        torch.mul(G[1:], H[:-1], out=ga[1:])
        torch.mul(G[0], E, out=ga[0])
        gh0 = (G[0, :, :, 0] * a[0, :, :, 0]) if ctx.has_h0 else None
        return ga, G, gh0


def linear_scan(a: Tensor, x: Tensor, h0: Tensor | None = None) -> Tensor:
    """h[t] = a[t] h[t-1] + x[t] over chunk layout (T, b, d, nc, n); h0: (b, d, n) or None."""
    return LinearScan.apply(a.contiguous(), x.contiguous(), h0)
