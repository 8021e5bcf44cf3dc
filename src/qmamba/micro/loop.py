"""What the micro training loops share: seeding, device and autocast, the optimizer and its schedule,
progress bars, a loss log read back every few steps, the batch order, and ``fit``, the loop itself (shuffled
batches -> loss -> step), whose forward and backward may replay a CUDA graph (``GraphedBatches``).

The optimizer is AdamW with qmamba's parameter groups (no weight decay on norms, biases and the SSM's
``A_log``/``D``) and qmamba's schedule: linear warmup, then cosine decay to zero.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from qmamba.train.optim import param_groups, warmup_cosine
from qmamba.utils.device import resolve_device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; returns a CPU generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(name: str | torch.device | None) -> torch.device:
    """cuda when present (or as asked), else cpu."""
    return name if isinstance(name, torch.device) else resolve_device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing on CPU (fp32 there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                   total_steps: int, warmup_ratio: float):
    """AdamW over qmamba's decay / no-decay groups and its warmup-cosine schedule."""
    fused = {"fused": True} if next(model.parameters()).device.type == "cuda" else {}
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, **fused)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total_steps, warmup_ratio))
    return opt, sched


def optimizer_step(model: nn.Module, opt, sched, grad_clip: float) -> torch.Tensor:
    """Clip, step, schedule, zero the grads; returns the gradient norm before clipping (a tensor: reading it
    would make the host wait for the step)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return norm


def progress(total: int, desc: str, enabled: bool):
    """A tqdm bar, or when ``enabled`` is False a log line at every tenth of ``total`` (a quiet build still
    says, in its log, how far each training got and how fast)."""
    if not enabled:
        return LogBar(total, desc)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)


class LogBar:
    """The part of tqdm's interface ``fit`` uses, writing ``desc: n/total steps in s s, loss x`` to the
    qmamba log at each tenth of ``total`` and at the end."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.n, self.postfix = total, desc, 0, ""
        self.every, self.start = max(1, -(-total // 10)), time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n % self.every == 0 or self.n == self.total:
            logging.getLogger("qmamba").info("%s: %d/%d steps in %.1f s%s", self.desc, self.n, self.total,
                                             time.perf_counter() - self.start, self.postfix)

    def set_postfix(self, **kwargs) -> None:
        self.postfix = "".join(f", {k} {v}" for k, v in kwargs.items())

    def close(self) -> None:
        pass


@dataclass
class LossLog:
    """Per-step training losses, and a smoothed summary of the last ones. A loss may be added as a 0-d tensor
    still being computed: it is read (one wait for the device) at the next ``flush``, ``recent`` or end of
    ``fit``, so that the host queues the next steps meanwhile. ``losses`` holds the ones read."""

    losses: list[float] = field(default_factory=list)
    pending: list[torch.Tensor] = field(default_factory=list)

    def add(self, loss: float | torch.Tensor) -> None:
        if isinstance(loss, torch.Tensor):
            self.pending.append(loss.detach().reshape(()))
            return
        self._append(float(loss))

    def flush(self) -> None:
        """Read the pending losses (each checked as ``add`` checks a float)."""
        if self.pending:
            values = torch.stack(self.pending).float().cpu().tolist()
            self.pending.clear()
            for value in values:
                self._append(value)

    def _append(self, loss: float) -> None:
        if not np.isfinite(loss):
            from qmamba.errors import QMambaError

            raise QMambaError(f"the training loss became {loss} at step {len(self.losses)}; "
                              f"lower the learning rate or check the data")
        self.losses.append(loss)

    def recent(self, n: int = 50) -> float:
        """Mean of the last ``n`` losses (nan before the first)."""
        self.flush()
        return float(np.mean(self.losses[-n:])) if self.losses else float("nan")


def length_grouped(order: torch.Tensor, lengths: torch.Tensor, batch_size: int, window: int,
                   gen: torch.Generator) -> torch.Tensor:
    """``order`` rearranged so that each run of ``batch_size`` items holds similar lengths: within windows of
    ``window`` batches the items are sorted by length and cut into batches, and all batches are then shuffled.
    Right-padded batches of such items are mostly tokens, not padding."""
    size = batch_size * window
    parts = [w[torch.argsort(lengths[w], stable=True)] for w in order.split(size)]
    batches = [b for w in parts for b in w.split(batch_size)]
    return torch.cat([batches[int(i)] for i in torch.randperm(len(batches), generator=gen)])


class GraphedBatches:
    """``CapturedTrainStep`` fed batch by batch: ``inputs(idx)`` copied into the tensors the graph reads (made from
    the first batch, which the graph is captured on), ``loss_fn(*tensors)`` under bf16 autocast without its weight
    cache (capture needs that). Calling it with a batch leaves that batch's gradients and returns its loss."""

    def __init__(self, model: nn.Module, inputs: Callable, loss_fn: Callable):
        self.model, self.inputs, self.loss_fn = model, inputs, loss_fn
        self.static: tuple[torch.Tensor, ...] | None = None
        self.step = None

    def _loss(self) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            return self.loss_fn(*self.static)

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        batch = self.inputs(idx)
        if self.static is None:
            from qmamba.train.graphed_step import CapturedTrainStep

            device = next(self.model.parameters()).device
            self.static = tuple(t.to(device) for t in batch)
            self.step = CapturedTrainStep(self._loss, list(self.model.parameters()))
        else:
            for static, new in zip(self.static, batch, strict=True):
                static.copy_(new)
        return self.step().clone()  # the graph rewrites its loss at the next replay


def batch_order(n_items: int, batch_size: int, steps: int, seed: int, lengths: torch.Tensor | None = None,
                window: int = 16) -> Iterator[torch.Tensor]:
    """``steps`` batches of ``batch_size`` indices into ``n_items`` items, reshuffled each epoch with a generator
    seeded by ``seed``; with the items' ``lengths``, batches of similar lengths (``length_grouped``)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.zeros(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.randperm(n_items, generator=gen)
            if lengths is not None:
                order = length_grouped(order, lengths, batch_size, window, gen)
        idx, order = order[:batch_size], order[batch_size:]
        yield idx


def fit(model: nn.Module, n_items: int, batch_size: int, steps: int, seed: int, opt_args: tuple, grad_clip: float,
        backward: Callable[[torch.Tensor], float | torch.Tensor], desc: str, show_progress: bool,
        lengths: torch.Tensor | None = None, window: int = 16, read_every: int = 20,
        graphed: tuple[Callable, Callable] | None = None) -> LossLog:
    """``steps`` optimizer steps over the batches of ``batch_order``. ``backward(idx)`` computes the batch's loss,
    calls backward and returns the loss (best a detached tensor: the losses are read every ``read_every`` steps,
    so the host does not wait for each step before queuing the next); ``opt_args`` = (lr, weight_decay, betas,
    warmup_ratio) of ``make_optimizer``. ``graphed`` = (inputs, loss_fn), for batches of one shape on a GPU:
    ``inputs(idx)`` the batch's tensors, ``loss_fn(*tensors)`` its loss; each step's forward and backward then
    replay one CUDA graph (``CapturedTrainStep``) instead of ``backward``, the same updates."""
    lr, weight_decay, betas, warmup_ratio = opt_args
    opt, sched = make_optimizer(model, lr, weight_decay, betas, steps, warmup_ratio)
    graph_step = GraphedBatches(model, *graphed) if graphed is not None else None
    log, bar = LossLog(), progress(steps, desc, show_progress)
    model.train()
    for idx in batch_order(n_items, batch_size, steps, seed, lengths, window):
        loss = graph_step(idx) if graph_step is not None else backward(idx)
        optimizer_step(model, opt, sched, grad_clip)
        log.add(loss)
        if len(log.pending) >= read_every:
            bar.set_postfix(loss=f"{log.recent(20):.3f}")
        bar.update()
    log.flush()
    bar.set_postfix(loss=f"{log.recent(20):.3f}")
    bar.close()
    return log
