"""Triton SSD chunked scan against ``ssd_chunk_scan_ref``: output, final states and every gradient.

On CPU the kernels run in Triton's interpreter at tiny sizes; the ``gpu`` tests use realistic sizes.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from testing_utils import assert_close, poison_empty  # noqa: E402

from qmamba.ops.ssd.chunk import ssd_chunk_scan  # noqa: E402
from qmamba.ops.ssd.chunked import ssd_chunk_scan_ref  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _inputs(b, l, h, p, g, n, dtype, *, optional=True, d_hdim=False, init=True, strided=False):
    """Model-like inputs; with ``strided``, x / B / C / dt are slices of one wider tensor as in models/mamba2.py."""
    kw = {"device": DEVICE}
    if strided:
        wide = torch.randn(b, l, h * p + 2 * g * n + h + 3, dtype=dtype, **kw)
        x, B, C, dt = torch.split(wide[..., :-3], [h * p, g * n, g * n, h], dim=-1)
        x, B, C = x.unflatten(-1, (h, p)), B.unflatten(-1, (g, n)), C.unflatten(-1, (g, n))
        dt = dt * 0.5
    else:
        x = torch.randn(b, l, h, p, dtype=dtype, **kw)
        B, C = (torch.randn(b, l, g, n, dtype=dtype, **kw) for _ in range(2))
        dt = torch.randn(b, l, h, dtype=dtype, **kw) * 0.5
    t = {"x": x, "dt": dt, "A": -torch.rand(h, **kw) - 0.5, "B": B, "C": C}
    if optional:
        t["D"] = torch.randn(h, p, **kw) if d_hdim else torch.randn(h, **kw)
        t["z"] = torch.randn(b, l, h, p, dtype=dtype, **kw)
        t["dt_bias"] = torch.randn(h, **kw) * 0.3
    if init:
        t["initial_states"] = torch.randn(b, h, p, n, **kw)
    return {k: v.detach().requires_grad_(True) for k, v in t.items()}


def _run(fn, t, chunk_size, final_weight=0.3, y_weight=1.0, **kw):
    """Forward, then the gradients of a fixed random-looking loss over y (and the final states)."""
    args = {k: v for k, v in t.items() if k not in ("x", "dt", "A", "B", "C")}
    y, final = fn(t["x"], t["dt"], t["A"], t["B"], t["C"], chunk_size, return_final_states=True, **args, **kw)
    w = torch.cos(torch.arange(y.numel(), device=y.device, dtype=torch.float32)).view(y.shape)
    loss = y_weight * (y.float() * w).sum() + final_weight * (final * final.detach().sign()).sum()
    grads = torch.autograd.grad(loss, list(t.values()), allow_unused=True)
    return y, final, dict(zip(t.keys(), grads))


def _compare(t, chunk_size, tol, grad_tol=None, **kw):
    y, final, grads = _run(ssd_chunk_scan, t, chunk_size, **kw)
    y_ref, final_ref, grads_ref = _run(ssd_chunk_scan_ref, t, chunk_size, **kw)
    assert y.dtype == t["x"].dtype and final.dtype == torch.float32
    assert_close(y.float(), y_ref.float(), tol, "y")
    assert_close(final, final_ref, tol, "final_states")
    for name in t:
        assert_close(grads[name].float(), grads_ref[name].float(), (grad_tol or {}).get(name, tol), f"d{name}")


def test_fp32_all_options():
    t = _inputs(2, 37, 4, 16, 2, 16, torch.float32)
    _compare(t, 16, 1e-4, dt_softplus=True)


def test_fp32_blocks_padding_strides_clamp():
    """Several row blocks per chunk, headdim / d_state padded to a tile, D per channel, dt_limit, strided inputs."""
    t = _inputs(1, 150, 2, 8, 1, 24, torch.float32, d_hdim=True, strided=True)
    _compare(t, 64, 1e-4, dt_softplus=True, dt_limit=(0.05, 1.0))


def test_fp32_no_optional_arguments():
    t = _inputs(2, 50, 4, 16, 2, 32, torch.float32, optional=False, init=False)
    _compare(t, 32, 1e-4, final_weight=0.0)
    _compare(_inputs(1, 1, 2, 16, 1, 16, torch.float32, optional=False), 16, 1e-4)  # length 1


def test_gradient_through_final_states_only():
    t = _inputs(1, 40, 2, 16, 2, 16, torch.float32)
    _compare(t, 16, 1e-4, y_weight=0.0, dt_softplus=True)


def test_bf16():
    t = _inputs(1, 100, 2, 16, 1, 16, torch.bfloat16)
    _compare(t, 64, 3e-2, grad_tol={"A": 6e-2, "dt_bias": 6e-2}, dt_softplus=True)


def test_unwritten_buffers_are_caught(monkeypatch):
    """Every buffer the kernels fill starts as NaN: the result must not depend on its old contents."""
    t = _inputs(1, 45, 2, 16, 2, 16, torch.float32)
    ref = _run(ssd_chunk_scan_ref, t, 32, dt_softplus=True)
    poison_empty(monkeypatch)
    y, final, grads = _run(ssd_chunk_scan, t, 32, dt_softplus=True)
    monkeypatch.undo()
    assert_close(y, ref[0], 1e-4, "y")
    assert_close(final, ref[1], 1e-4, "final_states")
    for name in t:
        assert_close(grads[name], ref[2][name], 1e-4, f"d{name}")


def test_unsupported_chunk_size_falls_back_to_ref():
    t = _inputs(1, 30, 2, 16, 1, 16, torch.float32)
    _compare(t, 24, 1e-6, dt_softplus=True)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b,l,h,p,g,n,chunk", [
    (1, 800, 80, 64, 1, 128, 256),  # Mamba2-2.7B prefill
    (2, 2048, 32, 64, 4, 64, 128),
    (2, 1000, 16, 64, 2, 16, 64),
])
def test_gpu_realistic(b, l, h, p, g, n, chunk, dtype):
    t = _inputs(b, l, h, p, g, n, dtype, strided=True)
    if dtype == torch.float32:
        _compare(t, chunk, 1e-4, grad_tol={"A": 1e-3, "dt_bias": 1e-3}, dt_softplus=True)
    else:
        _compare(t, chunk, 3e-2, grad_tol={"A": 1e-1, "dt_bias": 1e-1, "dt": 5e-2}, dt_softplus=True)
