"""A training step of fixed shape (forward, loss, backward) replayed from one CUDA graph.

A deep Mamba's training step on a short batch launches thousands of small kernels, and PyTorch's host
work per launch can then set the pace while the GPU waits. ``CapturedTrainStep`` captures the step once
and replays it, leaving only the kernels: ``qmamba bench`` times the step so without host overhead, and the
micro trainings train so (``micro.loop.fit``; the optimizer's few launches stay outside the graph). Its
inputs are whatever tensors ``loss_fn`` reads: copy each new batch into them (same shapes). Every call
leaves fresh gradients in the parameters' ``.grad`` (as a step after ``zero_grad(set_to_none=True)``:
written, not accumulated), in tensors of the graph's memory pool, where the captured activations also stay
between steps. The warm-up passes before the capture leave no gradients behind. Without CUDA the step runs
eagerly, with the same contract.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from qmamba.utils.graph_capture import capture

log = logging.getLogger(__name__)


class CapturedTrainStep:
    """``step()`` runs loss_fn().backward() for ``params``; returns the loss (detached)."""

    def __init__(self, loss_fn: Callable[[], Tensor], params: list[Tensor], warmup: int = 3):
        self.loss_fn, self.params = loss_fn, [p for p in params if p.requires_grad]
        self.graph, self.loss = None, None
        if not any(p.is_cuda for p in self.params):
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # Triton compiles, cuBLAS picks its kernels, autograd warms up
            for _ in range(warmup):
                self._eager()
        torch.cuda.current_stream().wait_stream(side)
        self._clear()  # backward inside the capture then allocates the .grad tensors from the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        try:
            self.loss = capture(self.graph, self._captured_body)
        except RuntimeError as err:  # e.g. a host sync in loss_fn: the step stays correct, only eager
            self.graph, self.loss = None, None
            self._clear()
            log.warning("CapturedTrainStep: the step cannot be captured as a CUDA graph, so it runs eagerly (%s)",
                        str(err).splitlines()[0])
            return
        self.grads = [p.grad for p in self.params]  # the graph writes these on every replay

    def _captured_body(self) -> Tensor:
        loss = self.loss_fn()
        loss.backward()
        return loss

    def _clear(self) -> None:
        for p in self.params:
            p.grad = None

    def _eager(self) -> Tensor:
        self._clear()
        loss = self.loss_fn()
        loss.backward()
        return loss.detach()

    def __call__(self) -> Tensor:
        if self.graph is None:
            return self._eager()
        self.graph.replay()
        for p, g in zip(self.params, self.grads):  # in case they were cleared or replaced since
            p.grad = g
        return self.loss.detach()
