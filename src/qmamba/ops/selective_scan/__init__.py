"""Mamba-1 selective scan: the dispatching entry point, its backends and its ground truth.

    naive.py            ``selective_scan_sequential``: the token-by-token recurrence (the ground truth)
    chunked.py          ``selective_scan_ref``: the chunked scan in PyTorch, hand-written backward (``ref``)
    chunk.py            the chunk-parallel Triton forward, autograd wrapper and ``triton`` entry point
    chunk_bwd.py        its backward kernels
    chunk_tiles.py      the launch plan, tile loaders and chunk carry both share
    fused_recurrent.py  the sequential Triton forward, one position after another (inference on many rows)
"""

from qmamba.ops import backend
from qmamba.ops.selective_scan.chunked import selective_scan_ref
from qmamba.ops.selective_scan.naive import selective_scan_sequential

backend.register("selective_scan", "ref", selective_scan_ref)


def register_triton() -> None:
    """Register the Triton kernels (``ops/runtime/triton_backend.py`` calls this when Triton and a GPU are there)."""
    from qmamba.ops.selective_scan.chunk import selective_scan_triton

    backend.register("selective_scan", "triton", selective_scan_triton, devices=("cuda",))


def selective_scan(u, delta, A, B, C, **kwargs):
    """Selective scan on the chosen backend; arguments as ``selective_scan_ref``."""
    return backend.resolve("selective_scan", u.device.type)(u, delta, A, B, C, **kwargs)


__all__ = ["register_triton", "selective_scan", "selective_scan_ref", "selective_scan_sequential"]
