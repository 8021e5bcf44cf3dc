"""The decode kernels' PTX-only variants (L2 prefetch, PDL) compiled for sm_90 on any machine (``sm90.py``):
Triton's interpreter runs no inline PTX, so this is where a malformed prefetch or a load placed on the wrong
side of the PDL wait shows without a GPU; and what the sequential scan's loop compiles to."""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

from sm90 import KERNELS  # noqa: E402
from sm90 import ptx as _ptx  # noqa: E402


def _prefetches_then_wait(ptx: str, before: int) -> None:
    """At least ``before`` prefetches precede the PDL wait, and one more comes after it (in the k loop)."""
    wait = ptx.index("griddepcontrol.wait")
    assert ptx[:wait].count("prefetch.global.L2 [") >= before
    assert "prefetch.global.L2 [" in ptx[wait:]


@pytest.mark.parametrize("rows,dbuf", [(1, False), (1, True), (16, False)])
def test_gemv_prefetches_before_the_pdl_wait(rows, dbuf):
    ptx = _ptx(*KERNELS["gemv"], {"HAS_BIAS": False, "BLOCK_M": rows, "BLOCK_N": 16, "BLOCK_K": 512, "SPLIT_K": 1,
                                  "IEEE": False, "PREFETCH": 2, "LINES": 8, "DBUF": dbuf, "SWAP": False, "PDL": True})
    _prefetches_then_wait(ptx, 2)
    if dbuf:  # the first weight tile is loaded before the wait too
        assert "ld.global" in ptx[:ptx.index("griddepcontrol.wait")]


@pytest.mark.parametrize("normed", [False, True])
def test_step_in_prefetches_before_the_pdl_wait(normed):
    ptx = _ptx(*KERNELS["step_in"], {"HAS_RES": not normed, "HAS_BIAS": False, "HAS_CONV_BIAS": True,
                                     "HAS_XPROJ": False, "XP_PAD": 16, "W": 4, "W_PAD": 4, "BLOCK_N": 16,
                                     "BLOCK_K": 512, "NORMED": normed, "DBUF": normed, "PREFETCH": 2, "LINES": 8,
                                     "PDL": True})
    _prefetches_then_wait(ptx, 2)


def test_no_prefetch_without_the_option():
    ptx = _ptx(*KERNELS["gemv"],
               {"HAS_BIAS": False, "BLOCK_M": 1, "BLOCK_N": 16, "BLOCK_K": 512, "SPLIT_K": 1, "IEEE": False,
                "PREFETCH": 0, "LINES": 8, "DBUF": False, "SWAP": False, "PDL": True})
    assert "prefetch.global.L2" not in ptx and "griddepcontrol.wait" in ptx


@pytest.mark.parametrize("one_tile", [True, False])
def test_mamba1_decode_loads_its_state_before_the_pdl_wait_with_dt_proj_in_one_tile(one_tile):
    # the state alone is fp32 (the parameters bf16): a 32-bit load before the wait is the state's; with
    # dt_proj in steps it is loaded after the loop (held across it, it cost registers)
    ptx = _ptx(*KERNELS["mamba1_decode"],
               {"HAS_D": False, "HAS_Z": True, "BLOCK_D": 16, "BLOCK_N": 16, "BLOCK_R": 256 if one_tile else 64,
                "ONE_TILE": one_tile, "PDL": True}, num_warps=2)
    before, after = ptx.split("griddepcontrol.wait", 1)
    assert any(f"ld.global{v}.b32" in before for v in ("", ".v2", ".v4")) == one_tile
    assert "ld.global.b16" in after  # x, z, dt_low, B, C: written by the step's earlier kernels


def test_sequential_scan_compiles_with_loads_in_order_and_a_position_ahead():
    flags = {"HAS_BIAS": True, "SOFTPLUS": True, "HAS_D": True, "HAS_Z": True, "HAS_H0": False, "BLOCK_D": 32,
             "NS": 16}
    in_order, ahead = (_ptx(*KERNELS["sequential_scan"], {**flags, "AHEAD": a}, num_warps=1) for a in (False, True))
    for ptx in (in_order, ahead):
        assert "ex2.approx" in ptx and "st.global" in ptx
    # ahead: position 0's five loads come before the loop as well as the next position's in it
    assert ahead.count("ld.global") >= in_order.count("ld.global") + 5
    assert "shfl.sync" in in_order  # the 2-D state's channels are spread over lanes: the sum over states shuffles
