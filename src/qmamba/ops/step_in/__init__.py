"""The front of a Mamba-1 decode step (residual add + RMSNorm, in_proj, conv update) as one op."""

from qmamba.ops import backend
from qmamba.ops.step_in.ref import mamba1_step_in_composed, mamba1_step_in_ref

backend.register("mamba1_step_in", "ref", mamba1_step_in_ref)


def mamba1_step_in(hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias,
                   residual_in_fp32=True):
    """On the chosen backend; arguments as ``mamba1_step_in_ref``."""
    return backend.resolve("mamba1_step_in", hidden.device.type)(
        hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, residual_in_fp32)


__all__ = ["mamba1_step_in", "mamba1_step_in_composed", "mamba1_step_in_ref"]
