"""Mamba-2 SSD chunked scan: the dispatching entry point, its backends and its ground truth.

    naive.py      ``ssd_sequential``: the token-by-token recurrence (the ground truth)
    chunked.py    ``ssd_chunk_scan_ref``: the chunked algorithm in PyTorch (``ref``)
    chunk.py      the chunk-parallel Triton scan: autograd wrapper, launches, ``triton`` entry point
    chunk_fwd.py  its forward kernels
    chunk_bwd.py  its backward kernels
"""

from qmamba.ops import backend
from qmamba.ops.ssd.chunked import ssd_chunk_scan_ref
from qmamba.ops.ssd.naive import ssd_sequential

backend.register("ssd_chunk_scan", "ref", ssd_chunk_scan_ref)


def register_triton() -> None:
    """Register the Triton kernels (``ops/runtime/triton_backend.py`` calls this when Triton and a GPU are there)."""
    from qmamba.ops.ssd.chunk import ssd_chunk_scan as ssd_chunk_scan_triton

    backend.register("ssd_chunk_scan", "triton", ssd_chunk_scan_triton, devices=("cuda",))


def ssd_chunk_scan(x, dt, A, B, C, chunk_size, **kwargs):
    """SSD scan on the chosen backend; arguments as ``ssd_chunk_scan_ref``."""
    return backend.resolve("ssd_chunk_scan", x.device.type)(x, dt, A, B, C, chunk_size, **kwargs)


__all__ = ["register_triton", "ssd_chunk_scan", "ssd_chunk_scan_ref", "ssd_sequential"]
