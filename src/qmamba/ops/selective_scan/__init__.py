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


def length_multiple(rows: int, channels: int, d_state: int, grad: bool) -> int:
    """The multiple of the sequence length at which a scan of (rows, channels, l) inputs laid out along l
    reads aligned rows. 16 for the chunk-parallel Triton kernels: Triton vectorises the loads of a stride only
    when it sees it divisible by 16. 8 (16-byte bf16 rows, for cuBLAS's fast kernels around the scan) where
    the sequential kernel runs (inference on many rows, one position at a time), and without Triton.

    Measured on an H100, 2.8B shape, captured LM prefills (ms, 64 layers): batch 1, 769 tokens 72.2, padded
    to 776 31.0, to 784 17.9; 168 tokens 10.6, padded to 176 7.5. Batch 64: 769 tokens 1062, padded to 776
    or 784 899 either way; 168 tokens 195, padded to 176 205 (only more work)."""
    try:
        from qmamba.ops.selective_scan import fused_recurrent as seq
    except ImportError:  # no Triton: the reference scan
        return 8
    return 8 if seq.sequential_for(rows, channels, d_state, grad) else 16


def selective_scan(u, delta, A, B, C, **kwargs):
    """Selective scan on the chosen backend; arguments as ``selective_scan_ref``."""
    return backend.resolve("selective_scan", u.device.type)(u, delta, A, B, C, **kwargs)


__all__ = ["length_multiple", "register_triton", "selective_scan", "selective_scan_ref", "selective_scan_sequential"]
