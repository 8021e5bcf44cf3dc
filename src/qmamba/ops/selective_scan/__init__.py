"""Mamba-1 selective scan: the dispatching entry point and its references."""

from qmamba.ops import backend
from qmamba.ops.selective_scan.ref import selective_scan_ref, selective_scan_sequential

backend.register("selective_scan", "ref", selective_scan_ref)


def length_multiple(rows: int, channels: int, d_state: int, grad: bool) -> int:
    """The multiple of the sequence length at which a scan of (rows, channels, l) inputs laid out along l
    reads aligned rows. 16 for the chunk-parallel Triton kernels: Triton vectorises the loads of a stride only
    when it sees it divisible by 16. 8 (16-byte bf16 rows, for cuBLAS's fast kernels around the scan) where
    the sequential kernel runs (inference on many rows, one position at a time), and without Triton.

    Measured on an H100, 2.8B shape, captured LM prefills (ms, 64 layers): batch 1, 769 tokens 72.2, padded
    to 776 31.0, to 784 17.9; 168 tokens 10.6, padded to 176 7.5. Batch 64: 769 tokens 1062, padded to 776
    or 784 899 either way; 168 tokens 195, padded to 176 205 (only more work)."""
    try:
        from qmamba.ops.selective_scan import triton_sequential as seq
    except ImportError:  # no Triton: the reference scan
        return 8
    return 8 if seq.sequential_for(rows, channels, d_state, grad) else 16


def selective_scan(u, delta, A, B, C, **kwargs):
    """Selective scan on the chosen backend; arguments as ``selective_scan_ref``."""
    return backend.resolve("selective_scan", u.device.type)(u, delta, A, B, C, **kwargs)


__all__ = ["length_multiple", "selective_scan", "selective_scan_ref", "selective_scan_sequential"]
