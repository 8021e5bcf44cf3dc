"""Timing a kernel as a decode step runs it: many launches replayed from one CUDA graph, each on a different
copy of its weight, so every launch reads the weight from HBM (a 64-layer step never finds a layer's weights
in L2) and consecutive launches overlap as they do in the step (PDL edges, no host in between).
"""

from __future__ import annotations

import torch
from torch import Tensor


def graph_us(fn, copies: list[Tensor], x, reps: int = 5) -> float:
    """Microseconds per call of fn(x, w) for w cycling through ``copies``, replayed from one CUDA graph."""
    for w in copies[:2]:
        fn(x, w)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            for w in copies:
                fn(x, w)
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (3 * reps * len(copies))


def weight_copies(like: Tensor, past_bytes: int = 300 << 20) -> list[Tensor]:
    """Views shaped like ``like`` into one uninitialised buffer, enough of them to exceed ``past_bytes``
    (at least two): stand-ins for distinct layers' weights when only the time matters."""
    count = max(2, -(-past_bytes // (like.numel() * like.element_size())))
    buf = torch.empty(count * like.numel(), device=like.device, dtype=like.dtype)
    return [chunk.view(like.shape) for chunk in buf.split(like.numel())]
