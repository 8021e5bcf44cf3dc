"""Triton add_norm and rms_norm_gated against their references: outputs (normed and new residual) and
every gradient, in the interpreter on CPU at tiny sizes, and on the GPU at Mamba sizes (marked ``gpu``)."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from testing_utils import assert_close, assert_grads_match, poison_empty  # noqa: E402

from qmamba.ops.rms_norm.naive import add_norm_ref, rms_norm_gated_ref  # noqa: E402
from qmamba.ops.rms_norm.rowwise import add_norm_triton, rms_norm_gated_triton  # noqa: E402

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _poison_empty(monkeypatch):
    poison_empty(monkeypatch)


def _leaf(shape, dtype, device, scale=1.0, shift=0.0):
    return (torch.randn(shape, device=device) * scale + shift).to(dtype).requires_grad_()


def _compare(fn, ref_fn, inputs: dict, kwargs: dict, names: tuple[str, ...], tol: float):
    """Outputs of fn vs ref_fn run in float64 on the same values, and every input's gradient."""
    inputs = {k: v for k, v in inputs.items() if v is not None}
    ref_in = {k: v.detach().double().requires_grad_() for k, v in inputs.items()}
    out, ref = fn(**inputs, **kwargs), ref_fn(**ref_in, **kwargs)
    out, ref = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    for name, o, r in zip(names, out, ref):
        assert_close(o, r, tol, name)
    assert_grads_match(out, ref, inputs, ref_in, tol)
    return out


def _check_add_norm(shape, has_res, has_bias, rms, res_fp32, dtype, res_dtype, tol, device="cpu"):
    d = shape[-1]
    inputs = {
        "x": _leaf(shape, dtype, device),
        "weight": _leaf(d, dtype, device, 0.1, 1.0),
        "bias": _leaf(d, dtype, device) if has_bias else None,
        "residual": _leaf(shape, res_dtype, device) if has_res else None,
    }
    kwargs = {"eps": 1e-5, "is_rms_norm": rms, "residual_in_fp32": res_fp32}
    y, res = _compare(add_norm_triton, add_norm_ref, inputs, kwargs, ("normed", "residual"), tol)
    want_res = torch.float32 if res_fp32 else (res_dtype if has_res else dtype)
    assert (y.dtype, res.dtype) == (dtype, want_res), f"dtypes {y.dtype}, {res.dtype}"


@pytest.mark.parametrize(
    "shape, has_res, has_bias, rms, res_fp32",
    [
        ((2, 5, 40), True, False, True, True),  # 16 rows per program, rows not a multiple of it
        ((3, 33), False, True, False, False),  # LayerNorm, no residual: x itself is the new residual
        ((7, 300), True, True, False, True),
        ((3, 1500), True, False, True, False),  # d > 1024: one row per program, masked columns
        ((1, 1, 24), False, False, True, True),  # one row (decode)
    ],
)
def test_add_norm_matches_ref_fp32(shape, has_res, has_bias, rms, res_fp32):
    _check_add_norm(shape, has_res, has_bias, rms, res_fp32, torch.float32, torch.float32, 1e-5)


@pytest.mark.parametrize("res_dtype, res_fp32", [(torch.float32, True), (torch.bfloat16, False)])
def test_add_norm_matches_ref_bf16(res_dtype, res_fp32):
    # the interpreter truncates fp32 -> bf16 (the GPU rounds), hence the loose tolerance
    _check_add_norm((4, 3, 48), True, False, True, res_fp32, torch.bfloat16, res_dtype, 2e-2)


def test_add_norm_without_grad_matches():
    x, r, w = torch.randn(5, 64), torch.randn(5, 64), torch.randn(64)
    with torch.no_grad():
        y, res = add_norm_triton(x, w, None, r, residual_in_fp32=True)
    y_ref, res_ref = add_norm_ref(x, w, None, r, residual_in_fp32=True)
    assert_close(y, y_ref, 1e-5, "normed")
    assert_close(res, res_ref, 1e-6, "residual")


def _check_gated(shape, group_size, has_z, norm_before_gate, dtype, tol, device="cpu"):
    d = shape[-1]
    z = None
    if has_z:  # a strided slice, as Mamba-2 splits z from the in_proj output
        z = torch.randn(*shape[:-1], 2 * d, device=device).to(dtype)[..., d:].requires_grad_()
    inputs = {"x": _leaf(shape, dtype, device), "weight": _leaf(d, dtype, device, 0.1, 1.0), "z": z}
    kwargs = {"eps": 1e-5, "group_size": group_size, "norm_before_gate": norm_before_gate}
    (y,) = _compare(rms_norm_gated_triton, rms_norm_gated_ref, inputs, kwargs, ("y",), tol)
    assert y.dtype == dtype


@pytest.mark.parametrize(
    "shape, group_size, has_z, norm_before_gate",
    [
        ((2, 5, 32), None, True, False),  # Mamba-2's default: gate then norm over all channels
        ((3, 48), 16, True, True),
        ((9, 40), 8, False, False),
        ((2, 1200), 600, True, False),  # masked columns inside each group
    ],
)
def test_rms_norm_gated_matches_ref_fp32(shape, group_size, has_z, norm_before_gate):
    _check_gated(shape, group_size, has_z, norm_before_gate, torch.float32, 1e-5)


def test_rms_norm_gated_matches_ref_bf16():
    _check_gated((4, 3, 64), 32, True, False, torch.bfloat16, 2e-2)


def test_norms_fall_back_above_8192_channels():
    x, w = torch.randn(2, 8200), torch.ones(8200)
    assert_close(add_norm_triton(x, w)[0], add_norm_ref(x, w)[0], 1e-6, "add_norm fallback")
    assert_close(rms_norm_gated_triton(x, w, x), rms_norm_gated_ref(x, w, x), 1e-6, "gated fallback")


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("d, has_bias, rms", [(2560, False, True), (2560, True, False), (8192, False, True)])
def test_add_norm_gpu(dtype, tol, d, has_bias, rms):
    _check_add_norm((2, 800, d), True, has_bias, rms, True, dtype, torch.float32, tol, device="cuda")
    _check_add_norm((1, 1, d), False, has_bias, rms, True, dtype, dtype, tol, device="cuda")  # decode, layer 0


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("group_size, norm_before_gate", [(5120, False), (640, False), (640, True)])
def test_rms_norm_gated_gpu(dtype, tol, group_size, norm_before_gate):
    _check_gated((2, 800, 5120), group_size, True, norm_before_gate, dtype, tol, device="cuda")
    _check_gated((1, 5120), group_size, True, norm_before_gate, dtype, tol, device="cuda")
