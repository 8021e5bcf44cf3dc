"""One-token SSM state update (Mamba-1 and Mamba-2 decode step), and Mamba-1's fused decode step."""

from qmamba.ops import backend
from qmamba.ops.state_update.ref import mamba1_decode_ssm_ref, selective_state_update_ref

backend.register("selective_state_update", "ref", selective_state_update_ref)
backend.register("mamba1_decode_ssm", "ref", mamba1_decode_ssm_ref)


def selective_state_update(state, x, dt, A, B, C, **kwargs):
    """State update on the chosen backend; arguments as ``selective_state_update_ref``."""
    return backend.resolve("selective_state_update", x.device.type)(state, x, dt, A, B, C, **kwargs)


def mamba1_decode_ssm(state, x, dt_low, dt_weight, dt_bias, A_log, B, C, **kwargs):
    """Mamba-1's step after x_proj on the chosen backend; arguments as ``mamba1_decode_ssm_ref``."""
    return backend.resolve("mamba1_decode_ssm", x.device.type)(state, x, dt_low, dt_weight, dt_bias, A_log, B, C,
                                                                **kwargs)


__all__ = ["mamba1_decode_ssm", "mamba1_decode_ssm_ref", "selective_state_update", "selective_state_update_ref"]
