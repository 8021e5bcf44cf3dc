"""RMSNorm / LayerNorm with a fused residual add, and Mamba-2's gated RMSNorm, pure PyTorch.

``add_norm_ref`` follows mamba_ssm's ``layer_norm_fn``: the residual sum is formed in fp32,
normalised, and returned as the new residual stream (fp32 if ``residual_in_fp32``).
``rms_norm_gated_ref`` follows mamba_ssm's ``RMSNormGated``: the gate silu(z) is applied
before (``norm_before_gate=False``) or after the norm, which runs per group of ``group_size``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def add_norm_ref(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
    eps: float = 1e-5,
    is_rms_norm: bool = True,
    residual_in_fp32: bool = False,
) -> tuple[Tensor, Tensor]:
    """Returns (norm(x + residual) in x's dtype, x + residual as the new residual)."""
    total = x.float() if residual is None else x.float() + residual.float()  # (..., d)
    if is_rms_norm:
        y = total * torch.rsqrt(total.square().mean(-1, keepdim=True) + eps)
    else:
        y = F.layer_norm(total, total.shape[-1:], eps=eps)
    y = y * weight.float()
    if bias is not None:
        y = y + bias.float()
    res_dtype = torch.float32 if residual_in_fp32 else (residual.dtype if residual is not None else x.dtype)
    return y.to(x.dtype), total.to(res_dtype)


def rms_norm_gated_ref(
    x: Tensor,
    weight: Tensor,
    z: Tensor | None = None,
    eps: float = 1e-5,
    group_size: int | None = None,
    norm_before_gate: bool = False,
) -> Tensor:
    """Gated RMSNorm over the last dim in groups of ``group_size`` (all of it if None)."""
    dtype = x.dtype
    x = x.float()
    if z is not None and not norm_before_gate:
        x = x * F.silu(z.float())
    d = x.shape[-1]
    gs = group_size or d
    xg = x.reshape(*x.shape[:-1], d // gs, gs)
    y = (xg * torch.rsqrt(xg.square().mean(-1, keepdim=True) + eps)).reshape(x.shape) * weight.float()
    if z is not None and norm_before_gate:
        y = y * F.silu(z.float())
    return y.to(dtype)
