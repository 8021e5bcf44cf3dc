"""Triton causal conv1d against ``causal_conv1d_ref``: output, final states and every gradient, in the
interpreter on CPU at tiny sizes, and on the GPU at Mamba sizes (marked ``gpu``)."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from testing_utils import assert_close, assert_grads_match, poison_empty  # noqa: E402

from qmamba.ops.causal_conv1d.direct import causal_conv1d_triton, causal_conv1d_update_triton  # noqa: E402
from qmamba.ops.causal_conv1d.naive import causal_conv1d_ref, causal_conv1d_update_ref  # noqa: E402

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _poison_empty(monkeypatch):
    poison_empty(monkeypatch)


def _make_x(b, d, l, layout, dtype, device):
    """x (b, d, l) as a leaf in one of the layouts Mamba passes; returns (leaf, x)."""
    if layout == "contiguous":
        leaf = torch.randn(b, d, l, dtype=dtype, device=device)
        return leaf.requires_grad_(), leaf
    if layout == "rows":  # Mamba-1's in_proj at any batch: a view of one (2 d, b l) GEMM result, strides (l, b l, 1)
        leaf = torch.randn(2 * d, b * l, dtype=dtype, device=device).requires_grad_()
        return leaf, leaf.view(2 * d, b, l).transpose(0, 1)[:, :d]
    extra = 24 if layout == "split" else 0  # Mamba-2: a slice of the in_proj output
    leaf = torch.randn(b, l, d + extra, dtype=dtype, device=device).requires_grad_()
    return leaf, leaf[:, :, :d].transpose(1, 2)  # (b, d, l), stride(1) == 1


def _check_conv(b, d, l, w, layout, has_init, has_bias, activation, final, dtype=torch.float32, device="cpu",
                tol=1e-5):
    leaf, x = _make_x(b, d, l, layout, dtype, device)
    weight = torch.randn(d, w, device=device, dtype=dtype).requires_grad_()
    bias = torch.randn(d, device=device, dtype=dtype).requires_grad_() if has_bias else None
    init = torch.randn(b, d, w - 1, device=device, dtype=dtype).requires_grad_() if has_init else None
    inputs = {"x": leaf, "weight": weight, "bias": bias, "initial_states": init}
    inputs = {k: v for k, v in inputs.items() if v is not None}
    out = causal_conv1d_triton(x, weight, bias, init, final, activation)
    # the reference runs in float64 on the same (possibly bf16) values: an exact target
    ref_in = {k: v.detach().double().requires_grad_() for k, v in inputs.items()}
    rx = {"contiguous": lambda t: t, "rows": lambda t: t.view(2 * d, b, l).transpose(0, 1)[:, :d]}.get(
        layout, lambda t: t[:, :, :d].transpose(1, 2))(ref_in["x"])
    ref = causal_conv1d_ref(rx, ref_in["weight"], ref_in.get("bias"), ref_in.get("initial_states"), final,
                            activation)
    out, ref = (out, ref) if final else ((out,), (ref,))
    for name, o, r in zip(("y", "final_states"), out, ref):
        assert o.dtype == dtype, f"{name}: dtype {o.dtype}"
        assert_close(o, r, tol, name)
    assert_grads_match(out, ref, inputs, ref_in, tol)


@pytest.mark.parametrize(
    "b, d, l, w, layout, has_init, has_bias, activation, final",
    [
        (2, 70, 37, 4, "channel_last", True, True, "silu", True),
        (2, 70, 67, 4, "split", False, True, "silu", True),  # l past one tile; Mamba-2's strided view
        (1, 8, 1, 4, "contiguous", True, False, None, True),  # length 1
        (2, 5, 2, 4, "channel_last", True, True, "silu", True),  # l < w - 1: final states reach into init
        (1, 66, 130, 2, "contiguous", False, True, "swish", False),
        (2, 9, 13, 3, "split", True, False, None, False),
        (3, 10, 21, 4, "rows", True, True, "silu", True),
    ],
)
def test_causal_conv1d_matches_ref_fp32(b, d, l, w, layout, has_init, has_bias, activation, final):
    _check_conv(b, d, l, w, layout, has_init, has_bias, activation, final)


def test_causal_conv1d_matches_ref_bf16():
    # the interpreter truncates fp32 -> bf16 (the GPU rounds), hence the loose tolerance
    _check_conv(2, 40, 50, 4, "channel_last", True, True, "silu", True, dtype=torch.bfloat16, tol=2e-2)


def test_causal_conv1d_output_follows_x_layout():
    x = torch.randn(1, 7, 16).transpose(1, 2)  # (b, d=16, l=7), contiguous along d
    y = causal_conv1d_triton(x, torch.randn(16, 4))
    assert y.stride(1) == 1, y.stride()


def test_causal_conv1d_falls_back_for_wide_kernels():
    x, weight = torch.randn(1, 4, 9), torch.randn(4, 5)
    assert_close(causal_conv1d_triton(x, weight), causal_conv1d_ref(x, weight), 1e-6, "w=5 fallback")


def _check_update(b, d, w, has_bias, activation, dtype, device, tol):
    x = torch.randn(b, 2 * d, dtype=dtype, device=device)[:, d:]  # a strided slice, as the mixers pass
    state = torch.randn(b, d, w, dtype=dtype, device=device)
    state_ref = state.clone()
    weight = torch.randn(d, w, dtype=dtype, device=device)
    bias = torch.randn(d, dtype=dtype, device=device) if has_bias else None
    y = causal_conv1d_update_triton(x, state, weight, bias, activation)
    y_ref = causal_conv1d_update_ref(x, state_ref, weight, bias, activation)
    assert_close(y, y_ref, tol, "y")
    assert torch.equal(state, state_ref), "conv_state not rolled as the reference rolls it"


@pytest.mark.parametrize("w, has_bias, activation", [(4, True, "silu"), (3, False, None), (2, True, None)])
def test_causal_conv1d_update_matches_ref(w, has_bias, activation):
    _check_update(3, 70, w, has_bias, activation, torch.float32, "cpu", 1e-5)


@pytest.mark.parametrize("impl", [causal_conv1d_update_triton, causal_conv1d_update_ref])
@pytest.mark.parametrize("where", ["in_place", "transposed"])
def test_causal_conv1d_update_writes_out(impl, where):
    b, d, w = 3, 40, 4
    buf = torch.randn(b, 3 * d)  # x: the middle columns of a wider row, as step_in passes in_proj's output
    x = buf[:, d:2 * d]
    state, weight, bias = torch.randn(b, d, w), torch.randn(d, w), torch.randn(d)
    want = causal_conv1d_update_ref(x.clone(), state.clone(), weight, bias, "silu")
    before = buf.clone()
    out = x if where == "in_place" else torch.zeros(d, b).t()  # transposed: not unit-stride along d
    got = impl(x, state, weight, bias, "silu", out=out)
    assert got is out
    assert_close(out, want, 1e-5, "out")
    if where == "in_place":  # the columns around it untouched
        assert torch.equal(buf[:, :d], before[:, :d]) and torch.equal(buf[:, 2 * d:], before[:, 2 * d:])


def test_update_steps_continue_the_sequence_conv():
    b, d, l, w = 2, 12, 9, 4
    x, weight, bias = torch.randn(b, d, l), torch.randn(d, w), torch.randn(d)
    y, final = causal_conv1d_triton(x[:, :, :5], weight, bias, return_final_states=True, activation="silu")
    state = torch.cat([torch.zeros(b, d, 1), final], dim=-1)  # (b, d, w): the last w inputs
    steps = [causal_conv1d_update_triton(x[:, :, t], state, weight, bias, "silu") for t in range(5, l)]
    full = causal_conv1d_ref(x, weight, bias, activation="silu")
    assert_close(torch.cat([y, torch.stack(steps, -1)], -1), full, 1e-5, "prefix + steps vs full")


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("b, d, l", [(1, 5120, 800), (2, 10240, 2048)])
@pytest.mark.parametrize("layout", ["channel_last", "contiguous"])
@pytest.mark.gpu
@requires_gpu
def test_causal_conv1d_gpu(layout, b, d, l, dtype, tol):
    _check_conv(b, d, l, 4, layout, True, True, "silu", True, dtype=dtype, device="cuda", tol=tol)
    _check_conv(b, d, 37, 4, "split", False, True, "silu", False, dtype=dtype, device="cuda", tol=tol)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
@pytest.mark.gpu
@requires_gpu
def test_causal_conv1d_update_gpu(dtype, tol):
    _check_update(4, 5376, 4, True, "silu", dtype, "cuda", tol)


@pytest.mark.gpu
@requires_gpu
def test_causal_conv1d_update_cuda_graph():
    d, w = 5120, 4
    x = torch.randn(1, d, device="cuda", dtype=torch.bfloat16)
    weight, bias = torch.randn(d, w, device="cuda"), torch.randn(d, device="cuda")
    state = torch.randn(1, d, w, device="cuda", dtype=torch.bfloat16)
    eager_state = state.clone()
    causal_conv1d_update_triton(x, state.clone(), weight, bias, "silu")  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = causal_conv1d_update_triton(x, state, weight, bias, "silu")
    for _ in range(3):
        graph.replay()
        y_eager = causal_conv1d_update_triton(x, eager_state, weight, bias, "silu")
        torch.cuda.synchronize()
        assert torch.equal(y, y_eager) and torch.equal(state, eager_state)
