"""A linear layer for the few rows of a decode step: one pass over the weight (the decode step's GEMVs).

    naive.py  ``gemv_ref``: ``F.linear`` (the ground truth and ``ref``)
    tiled.py  the Triton GEMV: weight tiles walked along k, split-k, tiles measured once per weight shape
"""

from qmamba.ops import backend
from qmamba.ops.gemv.naive import gemv_ref

backend.register("gemv", "ref", gemv_ref)


def register_triton() -> None:
    """Register the Triton kernels (``ops/runtime/triton_backend.py`` calls this when Triton and a GPU are there)."""
    from qmamba.ops.gemv.tiled import gemv as gemv_triton

    backend.register("gemv", "triton", gemv_triton, devices=("cuda",))


def gemv(x, weight, bias=None):
    """x (..., k) @ weight (n, k)^T (+ bias) on the chosen backend; meant for a handful of rows."""
    return backend.resolve("gemv", x.device.type)(x, weight, bias)


__all__ = ["gemv", "gemv_ref", "register_triton"]
