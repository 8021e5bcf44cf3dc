"""Mamba-2 SSD chunked scan: the dispatching entry point and its references."""

from qmamba.ops import backend
from qmamba.ops.ssd.ref import ssd_chunk_scan_ref, ssd_sequential

backend.register("ssd_chunk_scan", "ref", ssd_chunk_scan_ref)


def ssd_chunk_scan(x, dt, A, B, C, chunk_size, **kwargs):
    """SSD scan on the chosen backend; arguments as ``ssd_chunk_scan_ref``."""
    return backend.resolve("ssd_chunk_scan", x.device.type)(x, dt, A, B, C, chunk_size, **kwargs)


__all__ = ["ssd_chunk_scan", "ssd_chunk_scan_ref", "ssd_sequential"]
