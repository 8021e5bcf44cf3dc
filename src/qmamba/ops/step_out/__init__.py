"""The back of a Mamba-2 decode step (gated RMSNorm of the scan's output, out_proj) as one op."""

from qmamba.ops import backend
from qmamba.ops.step_out.ref import step_out_composed, step_out_ref

backend.register("step_out", "ref", step_out_ref)


def step_out(y, z, norm_weight, eps, out_weight, out_bias=None, group_size=None, norm_before_gate=False):
    """On the chosen backend; arguments and results as ``step_out_ref``."""
    return backend.resolve("step_out", y.device.type)(y, z, norm_weight, eps, out_weight, out_bias, group_size,
                                                       norm_before_gate)


__all__ = ["step_out", "step_out_composed", "step_out_ref"]
