"""The projections of Mamba-1's sequence path in the channels-first layout the scan kernels read.

Between ``in_proj`` and ``out_proj`` a Mamba-1 mixer's activations are (b, c, l) with stride 1 along l: the
conv and selective-scan kernels walk the sequence. These three functions are the linear layers of that path,
each written as the GEMM that produces or reads that layout without a transposing copy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def linear_channels_first(hidden: Tensor, linear: nn.Linear) -> Tensor:
    """linear(hidden) transposed, (b, l, d) -> (b, out, l), with stride 1 along l: the scan kernels walk
    the sequence. One GEMM over all b * l rows, W (out, d) @ rows^T, whose (out, b l) result is viewed as
    (b, out, l) with strides (l, b l, 1): no copy at any batch size."""
    b, l, d = hidden.shape
    y = torch.mm(linear.weight, hidden.reshape(b * l, d).T).view(-1, b, l).transpose(0, 1)  # (b, out, l)
    return y if linear.bias is None else y + linear.bias.to(y.dtype)[:, None]


def project_channels(weight: Tensor, x: Tensor) -> Tensor:
    """weight (out, c) applied over the channels of x (b, c, l) -> (b, out, l), contiguous along l.

    One GEMM per batch row on x as it lies in memory (the weight broadcast, not copied). torch.matmul would
    instead fold the rows into one GEMM through a transposing copy (always when x requires grad) and return
    the result contiguous along the channels, which the scan kernels then read across the grain."""
    if x.shape[0] == 1:
        return torch.mm(weight, x[0]).unsqueeze(0)
    return torch.bmm(weight.expand(x.shape[0], -1, -1), x)


def linear_from_channels(y: Tensor, linear: nn.Linear) -> Tensor:
    """linear over the channels of y (b, c, l) contiguous along l -> (b, l, out). Batch 1 (or training):
    linear on the transposed view, which cuBLAS reads in place at batch 1. Several rows without grad: one
    batched GEMM on the transposed views; linear would first copy y contiguous along c (the whole
    activation). In training the batched GEMM would materialise the broadcast weight's gradient per row, so
    that keeps linear; so does a length that is not a multiple of 8, whose rows of y cuBLAS's fast kernels
    cannot read 16-byte aligned."""
    b, _, l = y.shape
    if b == 1 or l % 8 or (torch.is_grad_enabled() and (linear.weight.requires_grad or y.requires_grad)):
        return linear(y.transpose(1, 2))
    out = torch.bmm(y.transpose(1, 2), linear.weight.t().expand(b, -1, -1))  # (b, l, out)
    return out if linear.bias is None else out + linear.bias
