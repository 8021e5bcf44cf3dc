"""The continuous-batching engine's decode step replayed from CUDA graphs, one per batch bucket.

    decoder = BucketGraphs(model)
    engine = Engine(model, num_slots=64, decode=decoder)
    decoder.prepare(engine.cache, engine.num_slots, engine.buckets)   # optional: capture every bucket now

The engine calls ``decode(tokens[:B], cache.first_rows(B))`` for B its bucket of the running slots. Its slot
cache is allocated once and rows never move, so ``first_rows(B)`` views the same memory at every step: a graph
captured once for B over those views and over a static token buffer replays the step for whatever requests
hold rows 0 .. B-1 then.

    per bucket B:   tokens   (B,)    static input; the engine's tokens are copied in before each replay
                    step     ``Captured``: logits (B, v) = model.step(tokens, rows 0..B-1), warmed up on a side
                             stream and captured into one memory pool shared by every bucket
    a call:         tokens -> static buffer -> replay -> logits (B, v), valid until the next call

Capturing runs the step on live rows (the warm-up calls): their state is saved before and written back after,
so a bucket first needed while requests run changes no answer. Graphs read the weights and the cache in
place: they are captured again when a weight moves (``.to``) or changes dtype, when the requested op backend
changes, or when the cache's buffers are not the ones captured. Without CUDA (or ``use_graphs=False``) a call
is ``model.step`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from qmamba.infer.cuda_graph import BUCKETS, Captured, bucket_size, check_decodable, model_device, weights_key

CaptureFn = Callable[..., Any]  # (fn, use_graph, warmup, pool) -> a callable replaying fn; Captured's signature


def bucket_sizes(num_slots: int, buckets: tuple[int, ...] = BUCKETS) -> list[int]:
    """The row counts the engine's decode step can ask for with ``num_slots`` slots, largest first."""
    return sorted({min(bucket_size(n, buckets), num_slots) for n in range(1, num_slots + 1)}, reverse=True)


def _cache_key(cache) -> tuple:
    """Where a cache's buffers live: its first and last layers' states (the views of one allocation)."""
    first, last = cache.layers[0], cache.layers[-1]
    return first.conv_state.data_ptr(), last.ssm_state.data_ptr(), len(cache.layers)


class BucketGraphs:
    """``decode(tokens (B,), rows) -> logits (B, v)`` for ``Engine(decode=...)``, replayed per bucket B.

    ``use_graphs``: capture CUDA graphs (default: when the model is on a CUDA device); False calls
    ``model.step``. ``capture``: what captures a step (``Captured``; tests inject a stand-in)."""

    def __init__(self, model, use_graphs: bool | None = None, warmup: int = 2, capture: CaptureFn = Captured):
        check_decodable(model)
        self.model, self.warmup, self.capture = model, warmup, capture
        self.use_graphs = model_device(model).type == "cuda" if use_graphs is None else use_graphs
        self.graphs: dict[int, tuple[Tensor, Any]] = {}  # B -> (static tokens (B,), captured step)
        self._params = list(model.parameters())
        self._key = None
        self._pool = None

    def __call__(self, tokens: Tensor, cache) -> Tensor:
        """One decode step of rows 0 .. B-1 (``cache``: those rows' views of the engine's slot cache)."""
        if not self.use_graphs:
            return self.model.step(tokens, cache)
        static, step = self._graph(tokens.shape[0], cache)
        static.copy_(tokens)  # (B,)
        return step()  # (B, v)

    def prepare(self, cache, num_slots: int, buckets: tuple[int, ...] = BUCKETS) -> None:
        """Capture the step of every bucket an engine of ``num_slots`` slots over ``cache`` will ask for
        (largest first, so the shared pool is sized by the first capture)."""
        if self.use_graphs:
            for size in bucket_sizes(num_slots, buckets):
                self._graph(size, cache.first_rows(size))

    # ------------------------------------------------------------------ capture
    def _graph(self, size: int, cache) -> tuple[Tensor, Any]:
        key = (weights_key(self._params), _cache_key(cache))
        if key != self._key:  # weights moved, dtype or backend changed, or another cache: every graph is stale
            self.graphs.clear()
            self._key = key
        if size not in self.graphs:
            self.graphs[size] = self._capture(size, cache)
        return self.graphs[size]

    @torch.inference_mode()
    def _capture(self, size: int, cache) -> tuple[Tensor, Any]:
        """Capture model.step over ``cache`` (B rows) and a new static token buffer; the rows' state is as before."""
        saved = [(s.conv_state.clone(), s.ssm_state.clone()) for s in cache.layers]
        static = torch.zeros(size, dtype=torch.long, device=cache.layers[0].conv_state.device)  # (B,)
        step = self.capture(lambda: self.model.step(static, cache), True, self.warmup, self._graph_pool())
        for state, (conv, ssm) in zip(cache.layers, saved):  # the warm-up steps advanced live rows
            state.conv_state.copy_(conv)
            state.ssm_state.copy_(ssm)
        return static, step

    def _graph_pool(self):
        """One memory pool for every bucket's graph (None without CUDA)."""
        if self._pool is None and torch.cuda.is_available():
            self._pool = torch.cuda.graph_pool_handle()
        return self._pool
