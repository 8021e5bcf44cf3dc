"""Registers qmamba's Triton kernels with the dispatch point.

Imported once by ``backend._load_optional_backends`` when Triton and a CUDA GPU are both present. Each op
package's ``register_triton`` imports its kernels and registers them as the ``triton`` backend for CUDA
tensors.
"""

import importlib

OP_PACKAGES = (
    "qmamba.ops.selective_scan",
    "qmamba.ops.causal_conv1d",
    "qmamba.ops.rms_norm",
    "qmamba.ops.state_update",
    "qmamba.ops.ssd",
    "qmamba.ops.gemv",
    "qmamba.ops.step_in",
    "qmamba.ops.step_out",
)

for _name in OP_PACKAGES:
    importlib.import_module(_name).register_triton()
