"""The front of a Mamba decode step (residual add + RMSNorm, in_proj, conv update, Mamba-1's x_proj) as one op.

    naive.py       ``step_in_ref`` (the ground truth and ``ref``) and ``step_in_composed`` (the same on the
                   dispatching ops: what the fused kernels fall back to)
    fused.py       the whole front in one Triton kernel for one row, and the choice among the ways to run it
    fused_rows.py  the same kernel for 2 to 16 rows (tensor-core dots)
"""

from qmamba.ops import backend
from qmamba.ops.step_in.naive import step_in_composed, step_in_ref

backend.register("step_in", "ref", step_in_ref)


def register_triton() -> None:
    """Register the Triton kernels (``ops/runtime/triton_backend.py`` calls this when Triton and a GPU are there)."""
    from qmamba.ops.step_in.fused import step_in as step_in_triton

    backend.register("step_in", "triton", step_in_triton, devices=("cuda",))


def step_in(hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo=0,
            residual_in_fp32=True, xproj_weight=None):
    """On the chosen backend; arguments and results as ``step_in_ref``."""
    return backend.resolve("step_in", hidden.device.type)(
        hidden, residual, norm_weight, eps, in_weight, in_bias, conv_state, conv_weight, conv_bias, conv_lo,
        residual_in_fp32, xproj_weight)


__all__ = ["register_triton", "step_in", "step_in_composed", "step_in_ref"]
