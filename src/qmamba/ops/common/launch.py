"""Host-side helpers of Triton launches shared by several kernels: strides and tile heights."""

from __future__ import annotations

import torch
import triton


def bc_strides(M: torch.Tensor) -> tuple[int, int, int, int]:
    """(b, g, n, l) strides of B or C given as (b, g, n, l) or (b, n, l)."""
    return tuple(M.stride()) if M.dim() == 4 else (M.stride(0), 0, M.stride(1), M.stride(2))


def block_rows(rows: int, n_pad: int, programs_per_tile: int, max_elements: int) -> int:
    """Tile height over ``rows`` state rows of ``n_pad`` elements: at most ``max_elements`` state elements a
    program, halved until the grid (``programs_per_tile`` * tiles programs) covers about two waves."""
    block = min(triton.next_power_of_2(rows), max(1, max_elements // n_pad))
    while block > 4 and programs_per_tile * triton.cdiv(rows, block) < 264:
        block //= 2
    return block
