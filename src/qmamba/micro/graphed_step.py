"""A training step of fixed-shape batches replayed from one CUDA graph: forward, backward, gradient clipping and
the AdamW update, captured once and replayed for every later batch.

A micro model's step is a few hundred small kernels, each launched by the host through Python; replaying them
as one graph leaves the host nothing to do but copy the next batch in. The micro LM's pretraining rows all have
one shape (packed text, ``(batch, seq_len)``), which is what a graph needs. ``benchmarks/micro_lm_step.py``
times this step beside the eager one.

    step = GraphedStep(model, loss_fn, opt, sched, grad_clip=1.0)
    loss = step(ids)        # (b, l) on the host or the device; returns the step's loss, a 0-d device tensor

The first ``warmup`` calls run eagerly on a side stream (the Triton kernels tune themselves, the allocator
settles; they are real training steps); the next call captures and replays. If the capture fails (an operation
that reads a value back to the host, say), a warning says so and every later step runs eagerly. The optimizer
must be AdamW with ``capturable=True`` and a tensor learning rate (``make_optimizer(..., capturable=True)``), so
that the schedule changes the rate in place and the graph reads it. Autocast runs without its weight cache, as
capture requires.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor, nn

log = logging.getLogger("qmamba")


class GraphedStep:
    def __init__(self, model: nn.Module, loss_fn: Callable[..., Tensor], opt: torch.optim.Optimizer, sched,
                 grad_clip: float, warmup: int = 3):
        if not all(g.get("capturable") for g in opt.param_groups):
            raise ValueError("GraphedStep needs an optimizer made with capturable=True (make_optimizer)")
        self.model, self.loss_fn, self.opt, self.sched = model, loss_fn, opt, sched
        self.grad_clip, self.warmup, self.calls = grad_clip, warmup, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[Tensor, ...] = ()
        self.loss: Tensor | None = None
        self.stream = torch.cuda.Stream()

    def _body(self, inputs: tuple[Tensor, ...]) -> Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            loss = self.loss_fn(*inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        return loss.detach()

    def __call__(self, *inputs: Tensor) -> Tensor:
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            return self._eager(inputs)
        if self.graph is None:
            try:
                self._capture(inputs)
            except RuntimeError as e:  # something in the step waits on the host: train on without the graph
                log.warning("training step: CUDA graph capture failed (%s); the steps run eagerly", e)
                self.graph, self.warmup = None, float("inf")
                self.opt.zero_grad(set_to_none=True)
                return self._eager(inputs)
        else:
            for static, new in zip(self.static, inputs, strict=True):
                static.copy_(new, non_blocking=True)
        self.graph.replay()
        self.sched.step()
        return self.loss.clone()

    def _eager(self, inputs: tuple[Tensor, ...]) -> Tensor:
        device = torch.device("cuda", torch.cuda.current_device())
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            loss = self._body(tuple(t.to(device) for t in inputs))
            self.opt.zero_grad(set_to_none=True)
        torch.cuda.current_stream().wait_stream(self.stream)
        loss.record_stream(torch.cuda.current_stream())  # read later on this stream: not reused before then
        self.sched.step()
        return loss

    def _capture(self, inputs: tuple[Tensor, ...]) -> None:
        device = torch.device("cuda", torch.cuda.current_device())
        self.static = tuple(t.to(device).clone() for t in inputs)
        torch.cuda.synchronize()
        self.opt.zero_grad(set_to_none=True)  # the graph allocates the gradients and rewrites them each replay
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self._body(self.static)
