"""The reference of ``gemv``: a linear layer, y = x W^T (+ bias)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def gemv_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (..., k), weight (n, k), bias (n,) -> (..., n)."""
    return F.linear(x, weight, bias)
