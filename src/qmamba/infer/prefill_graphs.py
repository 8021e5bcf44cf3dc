"""The continuous-batching engine's LM prefill replayed from CUDA graphs, one per (batch bucket, length bucket).

    engine = Engine(model, decode=BucketGraphs(model), encode=BucketEncoder(model), prefill=BucketPrefill(model))

An admission's rows (token ids, left-padded, with their images already encoded) are embedded and spliced eagerly
(a few kernels), then the LM's prefill over the embeddings, 64 layers of a few kernels each, replays from the graph
of the smallest bucket holding the rows (``BUCKETS``) and the length rounded up to ``length_multiple``:

    per (B, Lb):  embeds  (B, Lb, d)   static input; the rows are copied in left-padded, the rest zeroed
                  mask    (B, Lb)      1 on each row's real positions, 0 elsewhere (rows past b: all 0)
                  cache   B rows       one per B, reset inside the graph before the prefill fills it
    a call:       -> (last logits (b, v), a cache of b rows): copies, so the next replay changes neither

Left padding under a zero mask changes no state (a padded position adds nothing to the conv or the scan), so a
row's state and last logits are its prompt's whatever the bucket, as ``infer.admission`` pads too. Graphs are
captured on first use into one memory pool of their own, and again when a weight moves or changes dtype or the
requested op backend changes; a shape whose capture fails runs eagerly (with a warning). Without CUDA (or
``use_graphs=False``) a call is the model's own prefill.
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


class BucketPrefill:
    """``prefill(input_ids (b, l), attention_mask (b, l) | None, visual (n, q, d) | None) -> (logits (b, v),
    cache of b rows)`` for ``Engine(prefill=...)``: a multimodal model's rows are spliced with their visual
    tokens, a language model's embedded; the LM prefill replays per bucket.

    ``use_graphs``: capture CUDA graphs (default: when the model is on a CUDA device); False runs the model's
    prefill. ``length_multiple``: lengths are rounded up to it (fewer graphs; padding costs little).
    ``max_graphs``: shapes past that many run eagerly (each graph keeps its logits and takes a capture)."""

    def __init__(self, model, use_graphs: bool | None = None, warmup: int = 2, capture: CaptureFn = Captured,
                 buckets: tuple[int, ...] = BUCKETS, length_multiple: int = 64, max_graphs: int = 64):
        self.model, self.warmup, self.capture = model, warmup, capture
        self.buckets, self.length_multiple, self.max_graphs = tuple(buckets), length_multiple, max_graphs
        self.lm = getattr(model, "llm", model)  # a multimodal model's language model, or the model itself
        self.use_graphs = model_device(model).type == "cuda" if use_graphs is None else use_graphs
        self.graphs: dict[tuple, tuple[Tensor, Tensor, Any]] = {}  # (B, Lb, dtype) -> (embeds, mask, prefill)
        self.caches: dict[int, Any] = {}  # B -> the LM cache of B rows the graphs of B fill
        self.failed: set[tuple] = set()  # shapes whose capture failed: eager
        self._params = list(model.parameters())
        self._key = None
        self._pool = None

    def __call__(self, input_ids: Tensor, attention_mask: Tensor | None = None, visual: Tensor | None = None,
                 pixel_values: Tensor | None = None):
        if pixel_values is not None:  # the engine encodes them itself when it has an encoder
            visual = self.model.encode_images(pixel_values)  # (n, q, d)
        if self.lm is not self.model:  # splice the images' tokens in (left padding)
            s = self.model.embed(input_ids, None, attention_mask, padding_side="left", visual=visual)
            embeds, mask = s.inputs_embeds, s.attention_mask  # (b, L, d), (b, L)
        else:
            embeds, mask = self.lm.embed(input_ids), attention_mask  # (b, L, d), (b, L) or None
        b, length = embeds.shape[:2]
        size = bucket_size(b, self.buckets)
        padded = -(-length // self.length_multiple) * self.length_multiple
        graph = self._graph(size, padded, embeds.dtype, embeds.shape[-1]) if self.use_graphs else None
        if graph is None:
            return self.lm.prefill(inputs_embeds=embeds, attention_mask=mask)
        static_embeds, static_mask, prefill = graph
        static_embeds.zero_()
        static_embeds[:b, padded - length:].copy_(embeds)  # left-padded rows
        static_mask.zero_()
        static_mask[:b, padded - length:] = 1 if mask is None else mask
        logits = prefill()  # (B, v)
        cache = self.caches[size]
        rows = type(cache)([type(s)(s.conv_state[:b].clone(), s.ssm_state[:b].clone()) for s in cache.layers])
        return logits[:b].clone(), rows

    def _graph(self, size: int, length: int, dtype: torch.dtype, width: int):
        key = weights_key(self._params)
        if key != self._key:  # weights moved, dtype or backend changed: every graph is stale
            self.graphs.clear()
            self.caches.clear()
            self._key = key
        shape = (size, length, dtype)
        if shape not in self.graphs:
            if len(self.graphs) >= self.max_graphs or shape in self.failed:
                return None
            try:
                self.graphs[shape] = self._capture(size, length, dtype, width)
            except Exception as err:  # a graph is an optimisation: the shape then runs eagerly
                self.failed.add(shape)
                log.warning("prefill of %d x %d rows could not be captured as a CUDA graph (%s: %s); it runs "
                            "eagerly", size, length, type(err).__name__, err)
                return None
        return self.graphs[shape]

    @torch.inference_mode()
    def _capture(self, size: int, length: int, dtype: torch.dtype, width: int):
        device = model_device(self.model)
        if size not in self.caches:
            self.caches[size] = self.lm.allocate_inference_cache(size, device=device)
        cache = self.caches[size]
        embeds = torch.zeros(size, length, width, dtype=dtype, device=device)  # (B, Lb, d)
        mask = torch.zeros(size, length, dtype=torch.long, device=device)  # (B, Lb)
        if self._pool is None and torch.cuda.is_available():
            self._pool = torch.cuda.graph_pool_handle()

        def prefill():
            cache.reset()
            return self.lm.prefill(inputs_embeds=embeds, attention_mask=mask, cache=cache)[0]  # (B, v)
        return embeds, mask, self.capture(prefill, True, self.warmup, self._pool)
