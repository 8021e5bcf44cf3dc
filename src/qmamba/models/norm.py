"""Norm layers with mamba_ssm's parameter names (``weight``, ``bias``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qmamba.ops import add_norm, rms_norm_gated


class RMSNorm(nn.Module):
    """RMSNorm (or LayerNorm when ``rms=False``) that can add a residual first, as mamba_ssm's fused norm."""

    def __init__(self, d: int, eps: float = 1e-5, rms: bool = True, device=None, dtype=None):
        super().__init__()
        self.eps, self.rms = eps, rms
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))
        self.bias = None if rms else nn.Parameter(torch.zeros(d, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return add_norm(x, self.weight, self.bias, eps=self.eps, is_rms_norm=self.rms)[0]

    def add_forward(self, x: Tensor, residual: Tensor | None, residual_in_fp32: bool) -> tuple[Tensor, Tensor]:
        """(norm(x + residual), x + residual): the pre-norm residual step of a Mamba block."""
        return add_norm(
            x, self.weight, self.bias, residual=residual, eps=self.eps,
            is_rms_norm=self.rms, residual_in_fp32=residual_in_fp32,
        )


class RMSNormGated(nn.Module):
    """Mamba-2's output norm: RMSNorm(y * silu(z)) per group of ``group_size`` channels."""

    def __init__(self, d: int, eps: float = 1e-5, group_size: int | None = None,
                 norm_before_gate: bool = False, device=None, dtype=None):
        super().__init__()
        self.eps, self.group_size, self.norm_before_gate = eps, group_size, norm_before_gate
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))

    def forward(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        return rms_norm_gated(x, self.weight, z, eps=self.eps, group_size=self.group_size,
                              norm_before_gate=self.norm_before_gate)
