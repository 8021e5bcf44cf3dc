"""The continuous-batching engine's image encoding (vision tower + connector) replayed from CUDA graphs, one per
batch bucket of images.

    encoder = BucketEncoder(model)
    engine = Engine(model, num_slots=64, decode=BucketGraphs(model), encode=encoder)

An admission's prefill encodes its images with ``encoder(pixel_values (n, 3k, S, S)) -> (n, q, d)``. The
encoder's shapes depend only on the number of images, so a graph per bucket of n serves every admission: the
images are copied into the first n rows of the bucket's static input, the graph replays, and the first n rows of
its output are returned (a copy: the next replay reuses the graph's memory). The rows past n hold whatever the
last call left; every image is encoded on its own, so they change no real row. Eagerly, the tower and the
projector of a small admission are launch-bound (their hundreds of kernels cost more to launch than to run).

Graphs are captured on first use, into one memory pool of their own, and again when a weight moves or changes
dtype or the requested op backend changes; a shape whose capture fails runs eagerly (with a warning). Without
CUDA (or ``use_graphs=False``) a call is ``model.encode_images`` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from qmamba.infer.cuda_graph import BUCKETS, Captured, bucket_size, model_device, weights_key

log = logging.getLogger("qmamba")
CaptureFn = Callable[..., Any]  # (fn, use_graph, warmup, pool) -> a callable replaying fn; Captured's signature


class BucketEncoder:
    """``encode(pixel_values (n, 3k, S, S)) -> visual tokens (n, q, d)`` for ``Engine(encode=...)``.

    ``use_graphs``: capture CUDA graphs (default: when the model is on a CUDA device); False calls
    ``model.encode_images``. ``capture``: what captures an encoding (``Captured``; tests inject a stand-in)."""

    def __init__(self, model, use_graphs: bool | None = None, warmup: int = 2, capture: CaptureFn = Captured,
                 buckets: tuple[int, ...] = BUCKETS):
        self.model, self.warmup, self.capture, self.buckets = model, warmup, capture, tuple(buckets)
        self.use_graphs = model_device(model).type == "cuda" if use_graphs is None else use_graphs
        self.graphs: dict[tuple, tuple[Tensor, Any]] = {}  # (bucket, image shape, dtype) -> (static input, graph)
        self.failed: set[tuple] = set()  # shapes whose capture failed: eager
        self._params = list(model.parameters())
        self._key = None
        self._pool = None

    def __call__(self, pixel_values: Tensor) -> Tensor:
        n = pixel_values.shape[0]
        graph = self._graph(bucket_size(n, self.buckets), pixel_values) if self.use_graphs else None
        if graph is None:
            return self.model.encode_images(pixel_values)
        static, encode = graph
        static[:n].copy_(pixel_values)  # (n, 3k, S, S) into the bucket's (B, 3k, S, S)
        return encode()[:n].clone()  # (n, q, d)

    def _graph(self, size: int, like: Tensor) -> tuple[Tensor, Any]:
        key = weights_key(self._params)
        if key != self._key:  # weights moved, dtype or backend changed: every graph is stale
            self.graphs.clear()
            self._key = key
        shape = (size, *like.shape[1:], like.dtype)
        if shape not in self.graphs:
            if shape in self.failed:
                return None
            try:
                self.graphs[shape] = self._capture(size, like)
            except Exception as err:  # a graph is an optimisation: the shape then runs eagerly
                self.failed.add(shape)
                log.warning("image encoding of %d images could not be captured as a CUDA graph (%s: %s); it runs "
                            "eagerly", size, type(err).__name__, err)
                return None
        return self.graphs[shape]

    @torch.inference_mode()
    def _capture(self, size: int, like: Tensor) -> tuple[Tensor, Any]:
        static = torch.zeros(size, *like.shape[1:], dtype=like.dtype, device=like.device)  # (B, 3k, S, S)
        if self._pool is None and torch.cuda.is_available():
            self._pool = torch.cuda.graph_pool_handle()
        return static, self.capture(lambda: self.model.encode_images(static), True, self.warmup, self._pool)
