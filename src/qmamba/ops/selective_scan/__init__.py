"""Mamba-1 selective scan: the dispatching entry point and its references."""

from qmamba.ops import backend
from qmamba.ops.selective_scan.ref import selective_scan_ref, selective_scan_sequential

backend.register("selective_scan", "ref", selective_scan_ref)


def selective_scan(u, delta, A, B, C, **kwargs):
    """Selective scan on the chosen backend; arguments as ``selective_scan_ref``."""
    return backend.resolve("selective_scan", u.device.type)(u, delta, A, B, C, **kwargs)


__all__ = ["selective_scan", "selective_scan_ref", "selective_scan_sequential"]
