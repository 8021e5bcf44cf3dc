"""The front of a Mamba-1 decode step, unfused: the block's residual add + RMSNorm, in_proj, and the conv
update of the x half (with silu). ``mamba1_step_in_ref`` is the reference; ``mamba1_step_in_composed`` is
the same sequence on the dispatching ops (what the Triton version falls back to)."""

from __future__ import annotations

from torch import Tensor

from qmamba.ops.causal_conv1d import causal_conv1d_update
from qmamba.ops.causal_conv1d.ref import causal_conv1d_update_ref
from qmamba.ops.gemv import gemv
from qmamba.ops.gemv.ref import gemv_ref
from qmamba.ops.rms_norm import add_norm
from qmamba.ops.rms_norm.ref import add_norm_ref


def _step_in(norm, linear, conv, hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight,
             conv_bias, residual_in_fp32):
    h, residual = norm(hidden, norm_weight, None, residual, eps=eps, is_rms_norm=True,
                       residual_in_fp32=residual_in_fp32)
    x, z = linear(h, in_weight, in_bias).chunk(2, dim=-1)  # (b, di) each
    return conv(x, conv_state, conv_weight, conv_bias, activation="silu"), z, residual


def mamba1_step_in_ref(hidden: Tensor, residual: Tensor | None, norm_weight: Tensor, eps: float, in_weight: Tensor,
                       in_bias: Tensor | None, conv_state: Tensor, conv_weight: Tensor, conv_bias: Tensor | None,
                       residual_in_fp32: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """hidden, residual (b, d); in_weight (2 di, d); conv_state (b, di, w), updated in place; conv_weight (di, w)
    -> x = silu(conv) (b, di), z (b, di), the new residual (b, d)."""
    return _step_in(add_norm_ref, gemv_ref, causal_conv1d_update_ref, hidden, residual, norm_weight, eps,
                    in_weight, in_bias, conv_state, conv_weight, conv_bias, residual_in_fp32)


def mamba1_step_in_composed(*args, **kwargs) -> tuple[Tensor, Tensor, Tensor]:
    """``mamba1_step_in_ref`` on the dispatching ops (add_norm, gemv, causal_conv1d_update)."""
    return _step_in(add_norm, gemv, causal_conv1d_update, *args, **kwargs)
