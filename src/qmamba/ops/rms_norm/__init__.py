"""Residual-add + RMSNorm/LayerNorm, and the gated RMSNorm of Mamba-2.

    naive.py    ``add_norm_ref``, ``rms_norm_gated_ref`` in PyTorch (the ground truth and ``ref``)
    rowwise.py  the Triton kernels: row blocks forward, per-program partial sums backward
"""

from qmamba.ops import backend
from qmamba.ops.rms_norm.naive import add_norm_ref, rms_norm_gated_ref

backend.register("add_norm", "ref", add_norm_ref)
backend.register("rms_norm_gated", "ref", rms_norm_gated_ref)


def register_triton() -> None:
    """Register the Triton kernels (``ops/runtime/triton_backend.py`` calls this when Triton and a GPU are there)."""
    from qmamba.ops.rms_norm.rowwise import add_norm_triton, rms_norm_gated_triton

    backend.register("add_norm", "triton", add_norm_triton, devices=("cuda",))
    backend.register("rms_norm_gated", "triton", rms_norm_gated_triton, devices=("cuda",))


def add_norm(x, weight, bias=None, residual=None, **kwargs):
    """Fused residual add + norm on the chosen backend; arguments as ``add_norm_ref``."""
    return backend.resolve("add_norm", x.device.type)(x, weight, bias, residual, **kwargs)


def rms_norm_gated(x, weight, z=None, **kwargs):
    """Gated RMSNorm on the chosen backend; arguments as ``rms_norm_gated_ref``."""
    return backend.resolve("rms_norm_gated", x.device.type)(x, weight, z, **kwargs)


__all__ = ["add_norm", "add_norm_ref", "register_triton", "rms_norm_gated", "rms_norm_gated_ref"]
