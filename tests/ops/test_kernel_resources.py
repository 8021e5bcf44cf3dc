"""The decode step's kernels at the configurations they run with on the Mamba-2.8B shapes, compiled for sm_90
(``sm90.py``): no register spills. A spilled thread keeps in local memory what should stay in registers
(batch 16's dt_proj steps in mamba1_decode_ssm spilled 480 bytes a thread until its tiles were bounded)."""

from __future__ import annotations

import pytest

triton = pytest.importorskip("triton")

from sm90 import KERNELS, resources  # noqa: E402

from qmamba.ops.gemv import triton as gemv_triton  # noqa: E402
from qmamba.ops.selective_scan import triton_sequential as seq  # noqa: E402
from qmamba.ops.state_update.triton_mamba1 import decode_config  # noqa: E402
from qmamba.ops.step_in import triton as step_in_triton  # noqa: E402

DECODE_WEIGHTS = [(10240, 2560), (2560, 5120), (192, 5120), (50280, 2560)]  # in_proj, out_proj, x_proj, lm_head


def _no_spills(res: dict) -> None:
    assert res["STACK"] == 0 and res["LOCAL"] == 0, f"spills: {res}"


@pytest.mark.parametrize("batch", [1, 16, 64])
def test_mamba1_decode_ssm(batch):
    cfg = decode_config(batch, 5120, 16, 160)
    warps = cfg.pop("num_warps")
    _no_spills(resources(*KERNELS["mamba1_decode"], {"HAS_D": True, "HAS_Z": True, "PDL": True, **cfg}, warps))


def _gemv_configs() -> list[tuple[int, dict]]:
    """(rows, config) of every configuration gemv may run on a decode weight, each once."""
    seen, out = set(), []
    for (n, k), m in ((w, m) for w in DECODE_WEIGHTS for m in (1, 16)):
        for cfg in [gemv_triton.default_config(m, n, k), *gemv_triton.candidates(n, k, m)]:
            key = (m, tuple(sorted(cfg.items())))
            if key not in seen:
                seen.add(key)
                out.append((m, cfg))
    return out


@pytest.mark.parametrize("m,cfg", _gemv_configs(), ids=lambda v: str(v) if isinstance(v, int) else
                         "-".join(f"{k}{v}" for k, v in v.items()))
def test_gemv(m, cfg):
    constexprs = {"HAS_BIAS": False, "BLOCK_M": 1 if m == 1 else gemv_triton.MAX_ROWS, "BLOCK_N": cfg["block_n"],
                  "BLOCK_K": cfg["block_k"], "SPLIT_K": cfg.get("split_k", 1), "IEEE": False,
                  "PREFETCH": cfg.get("prefetch", 0), "LINES": 8, "DBUF": cfg.get("dbuf", False), "PDL": True}
    _no_spills(resources(*KERNELS["gemv"], constexprs, cfg["num_warps"], cfg["num_stages"]))


def test_step_in_one_row():
    cfg = step_in_triton.ONE_ROW
    constexprs = {"HAS_RES": False, "HAS_BIAS": False, "HAS_CONV_BIAS": True, "HAS_XPROJ": cfg["fuse_xproj"],
                  "XP_PAD": 256, "W": 4, "W_PAD": 4, "BLOCK_N": cfg["block_n"], "BLOCK_K": cfg["block_k"],
                  "NORMED": cfg["prenorm"], "DBUF": cfg["dbuf"], "PREFETCH": cfg["prefetch"], "LINES": 8, "PDL": True}
    _no_spills(resources(*KERNELS["step_in"], constexprs, cfg["num_warps"], cfg["num_stages"]))


@pytest.mark.parametrize("cols", [False, True])
def test_sequential_scan(cols):
    constexprs = {"HAS_BIAS": True, "SOFTPLUS": True, "HAS_D": True, "HAS_Z": True, "HAS_H0": False,
                  "BLOCK_D": seq.COLS_BLOCK_D if cols else seq.BLOCK_D, "NS": 16, "AHEAD": seq.AHEAD, "COLS": cols}
    _no_spills(resources(*KERNELS["sequential_scan"], constexprs, seq.COLS_WARPS if cols else seq.WARPS))
