"""One-token SSM state update (Mamba-1 and Mamba-2 decode step), and Mamba-1's fused decode step.

    naive.py        ``selective_state_update_ref``, ``mamba1_decode_ssm_ref``: the step in PyTorch (``ref``)
    step.py         the one-token state update in Triton, both forms as the Mamba-2 one
    mamba1_step.py  Mamba-1's whole step after x_proj (dt_proj, update, D, gate) in one Triton kernel
"""

from qmamba.ops import backend
from qmamba.ops.state_update.naive import mamba1_decode_ssm_ref, selective_state_update_ref

backend.register("selective_state_update", "ref", selective_state_update_ref)
backend.register("mamba1_decode_ssm", "ref", mamba1_decode_ssm_ref)


def register_triton() -> None:
    """Register the Triton kernels (``ops/runtime/triton_backend.py`` calls this when Triton and a GPU are there)."""
    from qmamba.ops.state_update.mamba1_step import mamba1_decode_ssm as mamba1_decode_ssm_triton
    from qmamba.ops.state_update.step import selective_state_update as selective_state_update_triton

    backend.register("selective_state_update", "triton", selective_state_update_triton, devices=("cuda",))
    backend.register("mamba1_decode_ssm", "triton", mamba1_decode_ssm_triton, devices=("cuda",))


def selective_state_update(state, x, dt, A, B, C, **kwargs):
    """State update on the chosen backend; arguments as ``selective_state_update_ref``."""
    return backend.resolve("selective_state_update", x.device.type)(state, x, dt, A, B, C, **kwargs)


def mamba1_decode_ssm(state, x, dt_low, dt_weight, dt_bias, A_log, B, C, **kwargs):
    """Mamba-1's step after x_proj on the chosen backend; arguments as ``mamba1_decode_ssm_ref``."""
    return backend.resolve("mamba1_decode_ssm", x.device.type)(state, x, dt_low, dt_weight, dt_bias, A_log, B, C,
                                                                **kwargs)


__all__ = [
    "mamba1_decode_ssm",
    "mamba1_decode_ssm_ref",
    "register_triton",
    "selective_state_update",
    "selective_state_update_ref",
]
