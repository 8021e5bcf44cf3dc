"""The back of a Mamba-2 decode step (gated RMSNorm of the scan's output, out_proj) as one op.

    naive.py  ``step_out_ref`` (the ground truth and ``ref``) and ``step_out_composed`` (the same on the
              dispatching ops: what the fused kernel falls back to)
    fused.py  the gated norm folded into out_proj's GEMV, one Triton kernel for one row
"""

from qmamba.ops import backend
from qmamba.ops.step_out.naive import step_out_composed, step_out_ref

backend.register("step_out", "ref", step_out_ref)


def register_triton() -> None:
    """Register the Triton kernels (``ops/runtime/triton_backend.py`` calls this when Triton and a GPU are there)."""
    from qmamba.ops.step_out.fused import step_out as step_out_triton

    backend.register("step_out", "triton", step_out_triton, devices=("cuda",))


def step_out(y, z, norm_weight, eps, out_weight, out_bias=None, group_size=None, norm_before_gate=False):
    """On the chosen backend; arguments and results as ``step_out_ref``."""
    return backend.resolve("step_out", y.device.type)(y, z, norm_weight, eps, out_weight, out_bias, group_size,
                                                       norm_before_gate)


__all__ = ["register_triton", "step_out", "step_out_composed", "step_out_ref"]
