"""A linear layer for the few rows of a decode step: one pass over the weight (the decode step's GEMVs)."""

from qmamba.ops import backend
from qmamba.ops.gemv.ref import gemv_ref

backend.register("gemv", "ref", gemv_ref)


def gemv(x, weight, bias=None):
    """x (..., k) @ weight (n, k)^T (+ bias) on the chosen backend; meant for a handful of rows."""
    return backend.resolve("gemv", x.device.type)(x, weight, bias)


__all__ = ["gemv", "gemv_ref"]
