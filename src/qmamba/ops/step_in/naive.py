"""The front of a Mamba decode step, unfused: the block's residual add + RMSNorm, in_proj, the conv update
(with silu) of the in_proj rows that go through the conv (Mamba-1: x; Mamba-2: xBC) and, for Mamba-1, x_proj
of the conv's output. ``step_in_ref`` is the
reference; ``step_in_composed`` is the same sequence on the dispatching ops (what the Triton version falls
back to)."""

from __future__ import annotations

from torch import Tensor

from qmamba.ops.causal_conv1d import causal_conv1d_update
from qmamba.ops.causal_conv1d.naive import causal_conv1d_update_ref
from qmamba.ops.gemv import gemv
from qmamba.ops.gemv.naive import gemv_ref
from qmamba.ops.rms_norm import add_norm
from qmamba.ops.rms_norm.naive import add_norm_ref


def _step_in(norm, linear, conv, hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight,
             conv_bias, conv_lo=0, residual_in_fp32=True, xproj_weight=None):
    h, residual = norm(hidden, norm_weight, None, residual, eps=eps, is_rms_norm=True,
                       residual_in_fp32=residual_in_fp32)
    y = linear(h, in_weight, in_bias)  # (b, n_out)
    rows = y[:, conv_lo:conv_lo + conv_state.shape[1]]  # (b, c), row stride n_out
    xc = conv(rows, conv_state, conv_weight, conv_bias, activation="silu", out=rows)  # in place: no copy, no cat
    xdbl = None if xproj_weight is None else linear(xc, xproj_weight, None)  # (b, n_xp)
    return y, residual, xdbl


def step_in_ref(hidden: Tensor, residual: Tensor | None, norm_weight: Tensor, eps: float, in_weight: Tensor,
                in_bias: Tensor | None, conv_state: Tensor, conv_weight: Tensor, conv_bias: Tensor | None,
                conv_lo: int = 0, residual_in_fp32: bool = True,
                xproj_weight: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """hidden, residual (b, d); in_weight (n_out, d); conv_state (b, c, w), updated in place; conv_weight (c, w);
    xproj_weight (n_xp, c) or None -> (in_proj(norm(hidden + residual)) (b, n_out) with rows
    [conv_lo, conv_lo + c) replaced by xc = silu(conv), the new residual (b, d), xc @ xproj_weight.T (b, n_xp)
    or None: Mamba-1's x_proj)."""
    return _step_in(add_norm_ref, gemv_ref, causal_conv1d_update_ref, hidden, residual, norm_weight, eps,
                    in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo, residual_in_fp32, xproj_weight)


def step_in_composed(*args, **kwargs) -> tuple[Tensor, Tensor, Tensor | None]:
    """``step_in_ref`` on the dispatching ops (add_norm, gemv, causal_conv1d_update)."""
    return _step_in(add_norm, gemv, causal_conv1d_update, *args, **kwargs)
