"""Asking L2 for a weight tile ahead of its load, from a Triton kernel (PTX ``prefetch.global.L2``).

A batch-1 decode step reads every weight once from HBM, and a GEMV program that loads a tile, then waits for
it, then multiplies, keeps only one tile per program in flight. Prefetching the tiles ``PREFETCH`` steps
ahead into L2 keeps more bytes in flight without holding them in registers. Launched with PDL
(``ops/runtime/pdl.py``), a kernel may also prefetch its first tiles *before* waiting on the kernel before it: the
weights do not depend on that kernel, so the memory bus keeps streaming through the previous kernel's tail.
A prefetch is a hint: it changes no value, only when bytes arrive. Not in Triton's interpreter (no PTX),
so callers pass ``PREFETCH = 0`` there (``enabled``).
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

from qmamba.ops import backend

LINE_BYTES = 128  # one L2 request per 128-byte line


def enabled() -> bool:
    """Whether kernels may emit prefetches (compiled PTX, not the interpreter; off with QMAMBA_PREFETCH=0)."""
    return not backend.triton_interpreted() and os.environ.get("QMAMBA_PREFETCH", "1") != "0"


def lines(block_k: int, element_size: int) -> int:
    """Requests per row of a (rows, block_k) tile: the LINES constexpr of ``prefetch_tile``."""
    return max(1, block_k * element_size // LINE_BYTES)


@triton.jit
def prefetch_tile(rows, k0, k_hi, BLOCK_K: tl.constexpr, LINES: tl.constexpr):
    """Prefetch columns [k0, k0 + BLOCK_K) of the rows starting at ``rows`` (pointers, (R, 1)): LINES requests
    a row, at most k_hi - 1 (a tile past the end asks again for the last line, which L2 holds already)."""
    offs = tl.minimum(k0 + tl.arange(0, LINES) * (BLOCK_K // LINES), k_hi - 1)
    tl.inline_asm_elementwise("prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [rows + offs[None, :]],
                              dtype=tl.int32, is_pure=False, pack=1)
