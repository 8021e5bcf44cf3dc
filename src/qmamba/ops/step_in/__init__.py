"""The front of a Mamba decode step (residual add + RMSNorm, in_proj, conv update, Mamba-1's x_proj) as one op."""

from qmamba.ops import backend
from qmamba.ops.step_in.ref import step_in_composed, step_in_ref

backend.register("step_in", "ref", step_in_ref)


def step_in(hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo=0,
            residual_in_fp32=True, xproj_weight=None):
    """On the chosen backend; arguments and results as ``step_in_ref``."""
    return backend.resolve("step_in", hidden.device.type)(
        hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo,
        residual_in_fp32, xproj_weight)


__all__ = ["step_in", "step_in_composed", "step_in_ref"]
