"""Triton mamba1_step_in (residual add + RMSNorm, in_proj, conv update in one kernel) against its reference:
outputs, the new residual and the conv state rolled in place (interpreter on CPU, compiled on GPU)."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from testing_utils import assert_close  # noqa: E402

from qmamba.ops.step_in.ref import mamba1_step_in_ref  # noqa: E402
from qmamba.ops.step_in.triton import mamba1_step_in  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _inputs(b, d, di, w, dtype, residual=True, bias=False, conv_bias=True):
    kw = {"device": DEVICE}
    return {
        "hidden": torch.randn(b, d, dtype=dtype, **kw),
        "residual": torch.randn(b, d, **kw) if residual else None,
        "norm_weight": (1 + 0.1 * torch.randn(d, **kw)).to(dtype), "eps": 1e-5,
        "in_weight": (torch.randn(2 * di, d, **kw) * d**-0.5).to(dtype),
        "in_bias": torch.randn(2 * di, dtype=dtype, **kw) if bias else None,
        "conv_state": torch.randn(b, di, w, dtype=dtype, **kw),
        "conv_weight": torch.randn(di, w, dtype=dtype, **kw) * 0.5,
        "conv_bias": torch.randn(di, dtype=dtype, **kw) if conv_bias else None,
    }


def _compare(t: dict, tol: float, **kw):
    mine, ref = dict(t), dict(t)
    mine["conv_state"], ref["conv_state"] = t["conv_state"].clone(), t["conv_state"].clone()
    got = mamba1_step_in(**mine, **kw)
    want = mamba1_step_in_ref(**ref)
    for name, a, b in zip(("x", "z", "residual"), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert_close(a.float(), b.float(), tol, name)
    assert_close(mine["conv_state"].float(), ref["conv_state"].float(), tol, "conv state")


@pytest.mark.parametrize("d,di,w", [(40, 24, 4), (33, 17, 3)])
@pytest.mark.parametrize("residual,bias,conv_bias", [(True, False, True), (False, True, False)])
def test_matches_ref_fp32(d, di, w, residual, bias, conv_bias):
    # small tiles: several k tiles, programs straddling the x / z boundary
    _compare(_inputs(1, d, di, w, torch.float32, residual, bias, conv_bias), 1e-5, block_n=8, block_k=16)


def test_matches_ref_bf16():
    _compare(_inputs(1, 64, 48, 4, torch.bfloat16), 2e-2, block_n=16, block_k=32)


def test_other_batch_sizes_are_composed():
    _compare(_inputs(3, 40, 24, 4, torch.float32), 1e-5)


@gpu
@pytest.mark.gpu
def test_gpu_full_size_bf16():
    _compare(_inputs(1, 2560, 5120, 4, torch.bfloat16), 2e-2)
