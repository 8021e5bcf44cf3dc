"""Triton selective_state_update against the PyTorch reference (interpreter on CPU, compiled on GPU)."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from testing_utils import assert_close  # noqa: E402

from qmamba.ops.state_update.mamba1_step import mamba1_decode_ssm  # noqa: E402
from qmamba.ops.state_update.naive import mamba1_decode_ssm_ref, selective_state_update_ref  # noqa: E402
from qmamba.ops.state_update.step import selective_state_update  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _mamba1(b, d, n, dtype, state_dtype=torch.float32):
    kw = {"device": DEVICE}
    state = torch.randn(b, d, n, dtype=state_dtype, **kw)
    x, dt, z = (torch.randn(b, d, dtype=dtype, **kw) for _ in range(3))
    A = -torch.rand(d, n, **kw) - 0.5
    B, C = (torch.randn(b, n, dtype=dtype, **kw) for _ in range(2))
    D, dt_bias = torch.randn(d, **kw), torch.randn(d, **kw) * 0.5
    return state, x, dt, A, B, C, D, z, dt_bias


def _mamba2(b, h, p, n, g, dtype, state_dtype=torch.float32):
    """Broadcast views like models/mamba2.py passes them: A, D, dt, dt_bias stride 0 along p (and n)."""
    kw = {"device": DEVICE}
    state = torch.randn(b, h, p, n, dtype=state_dtype, **kw)
    x, z = (torch.randn(b, h, p, dtype=dtype, **kw) for _ in range(2))
    dt = torch.randn(b, h, dtype=dtype, **kw)[:, :, None].expand(b, h, p)
    A = (-torch.rand(h, **kw) - 0.5)[:, None, None].expand(h, p, n)
    B, C = (torch.randn(b, g, n, dtype=dtype, **kw) for _ in range(2))
    D = torch.randn(h, **kw)[:, None].expand(h, p)
    dt_bias = (torch.randn(h, **kw) * 0.5)[:, None].expand(h, p)
    return state, x, dt, A, B, C, D, z, dt_bias


def _check(args, optional, softplus, tol, out=None):
    state, x, dt, A, B, C, D, z, dt_bias = args
    if not optional:
        D = z = dt_bias = None
    s_ref, s_tri = state.clone(), state.clone()
    y_ref = selective_state_update_ref(s_ref, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=softplus)
    y = selective_state_update(s_tri, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=softplus, out=out)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_close(y.float(), y_ref.float(), tol, "out")
    assert_close(s_tri.float(), s_ref.float(), tol, "state")
    return y


@pytest.mark.parametrize("optional", [True, False])
@pytest.mark.parametrize("b,d,n", [(2, 37, 16), (1, 8, 5)])
def test_mamba1_fp32(b, d, n, optional):
    _check(_mamba1(b, d, n, torch.float32), optional, softplus=optional, tol=1e-5)


@pytest.mark.parametrize("b,h,p,n,g", [(2, 4, 16, 32, 2), (1, 3, 5, 7, 1)])
def test_mamba2_fp32(b, h, p, n, g):
    _check(_mamba2(b, h, p, n, g, torch.float32), True, softplus=True, tol=1e-5)


def test_bf16_state_and_inputs():
    args = _mamba2(2, 4, 16, 16, 1, torch.bfloat16, state_dtype=torch.bfloat16)
    _check(args, True, softplus=True, tol=1e-2)
    _check(_mamba1(2, 24, 16, torch.bfloat16), True, softplus=True, tol=1e-2)


def test_out_buffer_is_written():
    args = _mamba2(2, 4, 16, 16, 2, torch.float32)
    out = torch.full_like(args[1], float("nan"))
    y = _check(args, True, softplus=True, tol=1e-5, out=out)
    assert y.data_ptr() == out.data_ptr()
    args1 = _mamba1(2, 24, 16, torch.float32)
    out1 = torch.full_like(args1[1], float("nan"))
    assert _check(args1, True, softplus=True, tol=1e-5, out=out1).data_ptr() == out1.data_ptr()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_gpu_realistic(dtype, tol):
    _check(_mamba1(4, 5120, 16, dtype), True, softplus=True, tol=tol)
    _check(_mamba2(4, 80, 64, 128, 1, dtype), True, softplus=True, tol=tol)
    _check(_mamba2(3, 48, 64, 64, 4, dtype), False, softplus=False, tol=tol)


@pytest.mark.gpu
@gpu
def test_gpu_cuda_graph_capture():
    state, x, dt, A, B, C, D, z, dt_bias = _mamba2(1, 80, 64, 128, 1, torch.bfloat16)
    out = torch.empty_like(x)
    s_ref = state.clone()
    kw = {"D": D, "z": z, "dt_bias": dt_bias, "dt_softplus": True}
    selective_state_update(state.clone(), x, dt, A, B, C, out=out, **kw)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        selective_state_update(state, x, dt, A, B, C, out=out, **kw)
    graph.replay()
    y_ref = selective_state_update_ref(s_ref, x, dt, A, B, C, **kw)
    assert_close(out.float(), y_ref.float(), 1e-2, "graph out")
    assert_close(state.float(), s_ref.float(), 1e-5, "graph state")


def _decode_args(b, d, n, r, dtype):
    """Mamba-1 step inputs as the model passes them: dt_low, B and C strided views of x_proj's output."""
    kw = {"device": DEVICE}
    state = torch.randn(b, d, n, **kw)
    x, z = (torch.randn(b, d, dtype=dtype, **kw) for _ in range(2))
    dt_low, B, C = torch.split(torch.randn(b, r + 2 * n, dtype=dtype, **kw), [r, n, n], dim=-1)
    dt_weight = (torch.randn(d, r, **kw) * r**-0.5).to(dtype)
    dt_bias = (torch.rand(d, **kw) - 4.0).to(dtype)  # softplus^-1 of small dt, as initialised
    A_log = torch.log(torch.arange(1, n + 1, dtype=torch.float32, **kw)).repeat(d, 1) + 0.1 * torch.randn(d, n, **kw)
    D = torch.randn(d, **kw).to(dtype)
    return state, x, dt_low, dt_weight, dt_bias, A_log, B, C, D, z


@pytest.mark.parametrize("b,d,n,r,dtype,tol", [(2, 37, 16, 5, torch.float32, 1e-5), (1, 8, 5, 70, torch.float32, 1e-5),
                                                (3, 24, 16, 12, torch.bfloat16, 2e-2),
                                                (1, 8, 5, 1100, torch.float32, 1e-5),  # dt_proj in steps
                                                (2, 40, 16, 1100, torch.float32, 1e-5),  # rows kernel, in steps
                                                (17, 24, 4, 12, torch.bfloat16, 2e-2)])  # two blocks of rows
@pytest.mark.parametrize("optional", [True, False])
def test_mamba1_fused_decode_matches_reference(b, d, n, r, dtype, tol, optional):
    state, x, dt_low, dt_weight, dt_bias, A_log, B, C, D, z = _decode_args(b, d, n, r, dtype)
    D, z = (D, z) if optional else (None, None)
    s_ref, s_tri = state.clone(), state.clone()
    y_ref = mamba1_decode_ssm_ref(s_ref, x, dt_low, dt_weight, dt_bias, A_log, B, C, D=D, z=z)
    y = mamba1_decode_ssm(s_tri, x, dt_low, dt_weight, dt_bias, A_log, B, C, D=D, z=z)
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_close(y.float(), y_ref.float(), tol, "out")
    assert_close(s_tri, s_ref, tol, "state")
    assert not torch.equal(s_tri, state)  # the state moved


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_mamba1_decode_kernels_agree_on_every_row(dtype, tol):
    """The one-row kernel (forced) and the rows kernel give the same step on 5 rows, each row its own."""
    from qmamba.ops.state_update.mamba1_step import decode_config, rows_config

    state, x, dt_low, dt_weight, dt_bias, A_log, B, C, D, z = _decode_args(5, 48, 16, 20, dtype)
    outs = []
    for cfg in (decode_config(5, 48, 16, 20), rows_config(5, 48, 16, 20)):
        s = state.clone()
        outs.append((mamba1_decode_ssm(s, x, dt_low, dt_weight, dt_bias, A_log, B, C, D=D, z=z, config=cfg), s))
    assert "BLOCK_M" in rows_config(5, 48, 16, 20) and "BLOCK_M" not in decode_config(5, 48, 16, 20)
    assert_close(outs[0][0].float(), outs[1][0].float(), tol, "out")
    assert_close(outs[0][1], outs[1][1], tol, "state")
    s_row = state[3:4].clone()  # row 3 alone through the one-row kernel: rows do not mix
    y_row = mamba1_decode_ssm(s_row, x[3:4], dt_low[3:4], dt_weight, dt_bias, A_log, B[3:4], C[3:4], D=D, z=z[3:4])
    assert_close(y_row.float(), outs[1][0][3:4].float(), tol, "row 3")


def test_mamba1_fused_decode_reference_is_the_unfused_step():
    """The fused contract equals dt_proj, then the plain state update with A = -exp(A_log) (fp32)."""
    state, x, dt_low, dt_weight, dt_bias, A_log, B, C, D, z = _decode_args(2, 16, 8, 6, torch.float32)
    s1, s2 = state.clone(), state.clone()
    y1 = mamba1_decode_ssm_ref(s1, x, dt_low, dt_weight, dt_bias, A_log, B, C, D=D, z=z)
    dt = torch.nn.functional.linear(dt_low, dt_weight)
    y2 = selective_state_update_ref(s2, x, dt, -torch.exp(A_log), B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=True)
    assert_close(y1, y2, 1e-6, "out")
    assert_close(s1, s2, 1e-6, "state")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("b", [1, 2, 16, 64])
def test_mamba1_fused_decode_full_size_bf16(b):
    """Mamba-2.8B's step shapes (d_inner 5120, d_state 16, dt_rank 160)."""
    state, x, dt_low, dt_weight, dt_bias, A_log, B, C, D, z = _decode_args(b, 5120, 16, 160, torch.bfloat16)
    s_ref, s_tri = state.clone(), state.clone()
    y_ref = mamba1_decode_ssm_ref(s_ref, x, dt_low, dt_weight, dt_bias, A_log, B, C, D=D, z=z)
    y = mamba1_decode_ssm(s_tri, x, dt_low, dt_weight, dt_bias, A_log, B, C, D=D, z=z)
    assert_close(y.float(), y_ref.float(), 2e-2, "out")
    assert_close(s_tri, s_ref, 1e-3, "state")


@pytest.mark.parametrize("heads", [False, True])
def test_A_is_log_takes_minus_exp_inside(heads):
    """A_is_log=True with A_log equals A = -exp(A_log) passed directly, on both backends."""
    args = _mamba2(2, 4, 16, 16, 2, torch.float32) if heads else _mamba1(2, 24, 16, torch.float32)
    state, x, dt, A, B, C, D, z, dt_bias = args
    A_log = torch.log(-A)
    s0, s1, s2 = state.clone(), state.clone(), state.clone()
    kw = {"D": D, "z": z, "dt_bias": dt_bias, "dt_softplus": True}
    y0 = selective_state_update_ref(s0, x, dt, A, B, C, **kw)
    y1 = selective_state_update_ref(s1, x, dt, A_log, B, C, A_is_log=True, **kw)
    y2 = selective_state_update(s2, x, dt, A_log, B, C, A_is_log=True, **kw)
    for y, s in ((y1, s1), (y2, s2)):
        assert_close(y, y0, 1e-5, "out")
        assert_close(s, s0, 1e-5, "state")
