"""Registers qmamba's Triton kernels with the dispatch point.

Imported once by ``backend._load_optional_backends`` when Triton and a CUDA GPU are both present.
Each kernel module registers its ops as the ``triton`` backend for CUDA tensors when imported.
"""

import importlib

KERNEL_MODULES = (
    "qmamba.ops.selective_scan.triton",
    "qmamba.ops.causal_conv1d.triton",
    "qmamba.ops.rms_norm.triton",
    "qmamba.ops.state_update.triton",
    "qmamba.ops.state_update.triton_mamba1",
    "qmamba.ops.ssd.triton",
    "qmamba.ops.gemv.triton",
    "qmamba.ops.step_in.triton",
    "qmamba.ops.step_out.triton",
)

for _name in KERNEL_MODULES:
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name)
