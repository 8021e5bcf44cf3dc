"""The interface of a language-model implementation under the bench (qmamba's own, or a peer's)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from qmamba.bench.options import BenchOptions


class LMRunner:
    """The operations the bench times; implementations (qmamba, peers) fill them in."""

    name = "?"
    train_by_default = True
    slow = False  # only the cheap figures (decode b1, prefill), few repeats

    def generate(self, ids: Tensor, n: int) -> None:  # greedy, n new tokens
        raise NotImplementedError

    def prefill(self, ids: Tensor) -> None:
        raise NotImplementedError

    def logits(self, ids: Tensor) -> Tensor:  # (b, l, v), with autograd
        raise NotImplementedError

    def parameters(self) -> list[Tensor]:
        raise NotImplementedError

    def captured_train(self, loss_fn: Callable[[], Tensor], params: list[Tensor]):
        """A callable running loss_fn().backward() from a captured graph, or None (no such path)."""
        return None

    def extra(self, opts: BenchOptions, device: torch.device) -> dict:
        """Implementation-specific figures."""
        return {}

    def close(self) -> None:
        """Drop the model (and its graphs) so the next runner has the memory."""
