"""qmamba's ops: functional kernels, each with a pure-PyTorch reference, behind one dispatch point.

Layering: ops -> models. Nothing here imports ``qmamba.models``.
"""

from qmamba.ops.backend import available, requested_backend, use_backend
from qmamba.ops.causal_conv1d import causal_conv1d, causal_conv1d_update
from qmamba.ops.gemv import gemv
from qmamba.ops.local_attention import local_attention, use_local_attention
from qmamba.ops.rms_norm import add_norm, rms_norm_gated
from qmamba.ops.selective_scan import selective_scan
from qmamba.ops.ssd import ssd_chunk_scan
from qmamba.ops.state_update import mamba1_decode_ssm, selective_state_update
from qmamba.ops.step_in import step_in
from qmamba.ops.step_out import step_out

__all__ = [
    "add_norm",
    "available",
    "causal_conv1d",
    "causal_conv1d_update",
    "gemv",
    "local_attention",
    "mamba1_decode_ssm",
    "requested_backend",
    "rms_norm_gated",
    "selective_scan",
    "selective_state_update",
    "ssd_chunk_scan",
    "step_in",
    "step_out",
    "use_backend",
    "use_local_attention",
]
