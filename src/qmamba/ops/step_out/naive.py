"""The back of a Mamba-2 decode step, unfused: the gated RMSNorm of the scan's output, then out_proj.
``step_out_ref`` is the reference; ``step_out_composed`` is the same on the dispatching ops (what the Triton
version falls back to)."""

from __future__ import annotations

from torch import Tensor

from qmamba.ops.gemv import gemv
from qmamba.ops.gemv.naive import gemv_ref
from qmamba.ops.rms_norm import rms_norm_gated
from qmamba.ops.rms_norm.naive import rms_norm_gated_ref


def step_out_ref(y: Tensor, z: Tensor, norm_weight: Tensor, eps: float, out_weight: Tensor,
                 out_bias: Tensor | None = None, group_size: int | None = None,
                 norm_before_gate: bool = False) -> Tensor:
    """y, z (b, k): the scan's output and the gate; norm_weight (k,); out_weight (n, k) -> (b, n):
    out_proj(RMSNorm(y * silu(z)) * norm_weight), per group of ``group_size`` channels (all k if None)."""
    return gemv_ref(rms_norm_gated_ref(y, norm_weight, z, eps=eps, group_size=group_size,
                                       norm_before_gate=norm_before_gate), out_weight, out_bias)


def step_out_composed(y: Tensor, z: Tensor, norm_weight: Tensor, eps: float, out_weight: Tensor,
                      out_bias: Tensor | None = None, group_size: int | None = None,
                      norm_before_gate: bool = False) -> Tensor:
    """``step_out_ref`` on the dispatching ops (rms_norm_gated, gemv)."""
    return gemv(rms_norm_gated(y, norm_weight, z, eps=eps, group_size=group_size, norm_before_gate=norm_before_gate),
                out_weight, out_bias)
