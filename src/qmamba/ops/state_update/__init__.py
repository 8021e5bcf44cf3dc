"""One-token SSM state update (Mamba-1 and Mamba-2 decode step)."""

from qmamba.ops import backend
from qmamba.ops.state_update.ref import selective_state_update_ref

backend.register("selective_state_update", "ref", selective_state_update_ref)


def selective_state_update(state, x, dt, A, B, C, **kwargs):
    """State update on the chosen backend; arguments as ``selective_state_update_ref``."""
    return backend.resolve("selective_state_update", x.device.type)(state, x, dt, A, B, C, **kwargs)


__all__ = ["selective_state_update", "selective_state_update_ref"]
