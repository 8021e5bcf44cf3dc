"""Triton selective scan against the PyTorch reference: output, last state and every gradient.

CPU tests run the kernels in Triton's interpreter at tiny sizes, with every buffer the kernels
write into poisoned with NaN; the ``gpu`` tests use realistic Mamba-1 sizes."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from testing_utils import assert_close  # noqa: E402

from qmamba.ops import backend  # noqa: E402
from qmamba.ops.selective_scan import chunk as scan_triton  # noqa: E402
from qmamba.ops.selective_scan import chunk_bwd, fused_recurrent, register_triton  # noqa: E402
from qmamba.ops.selective_scan.chunk import selective_scan_triton  # noqa: E402
from qmamba.ops.selective_scan.chunked import selective_scan_ref  # noqa: E402


def _inputs(b, d, l, n, groups=(0, 0), dtype=torch.float32, device="cpu", optional=True):
    """Random scan inputs; groups (gB, gC), 0 for (b, n, l). A, D, delta_bias, initial_state in fp32."""
    def bc(g):
        return torch.randn((b, n, l) if g == 0 else (b, g, n, l), device=device, dtype=dtype)

    t = {"u": torch.randn(b, d, l, device=device, dtype=dtype),
         "delta": (torch.randn(b, d, l, device=device) * 0.5 - 1).to(dtype),
         "A": -torch.rand(d, n, device=device) * 4 - 0.1, "B": bc(groups[0]), "C": bc(groups[1])}
    if optional:
        t.update(D=torch.randn(d, device=device), z=torch.randn(b, d, l, device=device, dtype=dtype),
                 delta_bias=torch.randn(d, device=device) * 0.3, initial_state=torch.randn(b, d, n, device=device))
    return {k: v.requires_grad_(True) for k, v in t.items()}


def _compare(t, tol, softplus=True, chunk_size=None, last_weight=1.0):
    """Forward, last state and the gradients of every input, triton vs ref."""
    out1, last1 = selective_scan_triton(**t, delta_softplus=softplus, return_last_state=True, chunk_size=chunk_size)
    out2, last2 = selective_scan_ref(**t, delta_softplus=softplus, return_last_state=True)
    assert out1.dtype == t["u"].dtype and last1.dtype == torch.float32
    assert_close(out1, out2, tol, "out")
    assert_close(last1, last2, tol, "last state")
    gy = torch.randn_like(out2)
    gl = torch.randn_like(last2) * last_weight
    grads1 = torch.autograd.grad((out1.float() * gy).sum() + (last1 * gl).sum(), list(t.values()))
    grads2 = torch.autograd.grad((out2.float() * gy).sum() + (last2 * gl).sum(), list(t.values()))
    for name, g1, g2 in zip(t, grads1, grads2):
        assert g1.dtype == t[name].dtype, f"grad {name}: dtype {g1.dtype}, input {t[name].dtype}"
        assert_close(g1, g2, tol, f"grad {name}")


class _PoisonedTorch:
    """Stands in for ``torch`` inside the kernel modules: every new buffer starts as NaN."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty(*args, **kwargs):
        return torch.empty(*args, **kwargs).fill_(float("nan"))

    @staticmethod
    def empty_like(*args, **kwargs):
        return torch.empty_like(*args, **kwargs).fill_(float("nan"))


@pytest.fixture
def poisoned(monkeypatch):
    for module in (scan_triton, chunk_bwd, fused_recurrent):
        monkeypatch.setattr(module, "torch", _PoisonedTorch())


@pytest.mark.parametrize(
    "b,d,l,n,groups,chunk,optional",
    [
        (2, 6, 37, 4, (0, 0), 8, True),  # several chunks, a partial last one
        (1, 40, 19, 3, (0, 0), None, True),  # two channel blocks (the second partial), one chunk
        (2, 8, 20, 5, (2, 4), 4, True),  # grouped B and C with different group counts
        (2, 5, 1, 4, (0, 0), None, True),  # length 1
        (1, 7, 13, 2, (0, 0), 4, False),  # no D, z, delta_bias, initial_state
    ],
)
def test_matches_ref_fp32(poisoned, b, d, l, n, groups, chunk, optional):
    _compare(_inputs(b, d, l, n, groups, optional=optional), 1e-4, softplus=optional, chunk_size=chunk)


def test_atomic_dB_dC(poisoned, monkeypatch):
    """Past PARTIAL_BC_MAX_BYTES the d-blocks add dB and dC atomically into (b, g, n, l)."""
    monkeypatch.setattr(chunk_bwd, "PARTIAL_BC_MAX_BYTES", 0)
    _compare(_inputs(2, 40, 20, 3, (2, 0)), 1e-4, chunk_size=8)


def test_matches_ref_bf16(poisoned):
    _compare(_inputs(2, 6, 21, 4, (0, 1), dtype=torch.bfloat16), 2e-2, chunk_size=8)


def _mamba1_layout(b, d, l, n, dtype=torch.float32, device="cpu"):
    """B, C, delta and z as transposed views of (b, l, .) projections, as Mamba-1 passes them."""
    t = _inputs(b, d, l, n, dtype=dtype, device=device)

    def leaf(*shape):
        return torch.randn(*shape, device=device).to(dtype).requires_grad_(True)

    proj = leaf(b, l, 2 * n + 3)
    t["B"], t["C"] = proj[..., 3:3 + n].transpose(1, 2), proj[..., 3 + n:].transpose(1, 2)
    t["delta"] = (leaf(b, l, d) * 0.5 - 1).transpose(1, 2)
    t["z"] = leaf(b, l, 2 * d)[..., d:].transpose(1, 2)  # as in_proj's z
    t["u"] = leaf(b, 2 * d, l + 1)[:, 1::2, 1:]
    return t


def test_strided_inputs_like_mamba1(poisoned):
    _compare(_mamba1_layout(2, 6, 18, 4), 1e-4, chunk_size=8)


def test_inputs_laid_out_like_in_proj_of_all_rows(poisoned):
    """u and z as Mamba-1's in_proj gives them at batch > 1: views of one (2d, b l) GEMM result, strides
    (l, b l, 1); delta contiguous, as dt_proj's bmm gives it."""
    b, d, l, n = 3, 6, 18, 4
    t = _inputs(b, d, l, n)
    xz = torch.randn(2 * d, b * l).requires_grad_(True)
    t["u"], t["z"] = xz.view(2 * d, b, l).transpose(0, 1).chunk(2, dim=1)
    assert t["u"].stride() == (l, b * l, 1)
    _compare(t, 1e-4, chunk_size=8)


def _compare_inference(t, tol, softplus=True):
    """Forward and last state without gradients, triton vs ref."""
    with torch.no_grad():
        out1, last1 = selective_scan_triton(**t, delta_softplus=softplus, return_last_state=True)
        out2, last2 = selective_scan_ref(**t, delta_softplus=softplus, return_last_state=True)
    assert out1.dtype == t["u"].dtype and last1.dtype == torch.float32
    assert_close(out1, out2, tol, "out")
    assert_close(last1, last2, tol, "last state")


def _recorded_grids(monkeypatch, kernel) -> list:
    """The grid of each launch of ``kernel`` from here on (its module's name for it stays the kernel: the
    interpreter looks kernels up by name)."""
    grids, run = [], kernel.run

    def recording_run(*args, grid, **kwargs):
        grids.append(grid)
        return run(*args, grid=grid, **kwargs)

    monkeypatch.setattr(kernel, "run", recording_run)
    return grids


@pytest.mark.parametrize(
    "b,d,l,n,groups,optional",
    [(2, 6, 37, 4, (0, 0), True), (2, 40, 19, 3, (2, 4), True), (3, 5, 1, 4, (0, 0), True),
     (1, 7, 13, 2, (0, 0), False), (2, 70, 9, 16, (0, 0), True)],
)
@pytest.mark.parametrize("ahead", [False, True])
def test_sequential_inference_matches_ref(poisoned, monkeypatch, b, d, l, n, groups, optional, ahead):
    monkeypatch.setattr(fused_recurrent, "MIN_ROW_CHANNELS", 1)
    monkeypatch.setattr(fused_recurrent, "AHEAD", ahead)
    grids = _recorded_grids(monkeypatch, fused_recurrent._sequential_fwd)
    _compare_inference(_inputs(b, d, l, n, groups, optional=optional), 1e-4, softplus=optional)
    assert len(grids) == 1


def test_sequential_mamba1_layout(poisoned, monkeypatch):
    monkeypatch.setattr(fused_recurrent, "MIN_ROW_CHANNELS", 1)
    _compare_inference(_mamba1_layout(2, 6, 18, 4), 1e-4)


def test_sequential_only_for_inference_on_enough_rows(monkeypatch):
    t = _inputs(3, 40, 9, 4)  # 3 rows x 40 channels
    use = fused_recurrent.use_sequential
    assert not use(t["u"], 4, t["delta"], min_row_channels=120)  # needs a gradient
    with torch.no_grad():
        assert use(t["u"], 4, t["delta"], min_row_channels=120) and not use(t["u"], 4, min_row_channels=121)
        assert not use(t["u"], fused_recurrent.MAX_STATE + 1, min_row_channels=1)
        # by default from 16 rows of Mamba-2.8B's 5120 channels (a batched prefill), not 4
        assert use(torch.empty(16, 5120, 1), 16) and not use(torch.empty(4, 5120, 1), 16)
        monkeypatch.setattr(fused_recurrent, "MIN_ROW_CHANNELS", None)
        assert not use(torch.empty(64, 5120, 1), 16)


@pytest.mark.parametrize("sequential", [False, True])
def test_minus_inf_dt_on_a_padded_tail_keeps_the_state(poisoned, monkeypatch, sequential):
    """Mamba-1 runs an odd-length prefill right-padded with dt = -inf on the padding (softplus -> dt = 0):
    the real positions' outputs and the last state are those of the unpadded sequence, with no inf or NaN."""
    if sequential:
        monkeypatch.setattr(fused_recurrent, "MIN_ROW_CHANNELS", 1)
    l, lp = 21, 32
    t = {k: v.detach() for k, v in _inputs(2, 6, lp, 4).items()}
    t["delta"][:, :, l:] = float("-inf")
    with torch.no_grad():
        out, last = selective_scan_triton(**t, delta_softplus=True, return_last_state=True, chunk_size=8)
    cut = {k: v[..., :l] if v.dim() == 3 and v.shape[-1] == lp else v for k, v in t.items()}
    want, want_last = selective_scan_ref(**cut, delta_softplus=True, return_last_state=True)
    assert torch.isfinite(out).all()
    assert_close(out[..., :l], want, 1e-4, "out")
    assert_close(last, want_last, 1e-4, "last state")


def test_gradient_through_last_state_only(poisoned):
    t = _inputs(1, 4, 11, 3)
    _, last1 = selective_scan_triton(**t, delta_softplus=True, return_last_state=True, chunk_size=4)
    _, last2 = selective_scan_ref(**t, delta_softplus=True, return_last_state=True)
    grads1 = torch.autograd.grad(last1.sum(), list(t.values()), allow_unused=True)
    grads2 = torch.autograd.grad(last2.sum(), list(t.values()), allow_unused=True)
    for name, g1, g2 in zip(t, grads1, grads2):
        if g2 is None:  # C, D, z do not reach the last state: no gradient, or zeros
            assert g1 is None or not g1.any(), f"grad {name}: expected zeros, max abs {g1.abs().max():.3g}"
        else:
            assert_close(g1, g2, 1e-4, f"grad {name}")


def test_unsupported_arguments_fall_back_to_ref():
    t = {k: v.detach().double() for k, v in _inputs(1, 4, 9, 3).items()}
    assert_close(selective_scan_triton(**t), selective_scan_ref(**t), 1e-12, "float64 out")


def test_registered_for_cuda():
    register_triton()
    assert backend.available("selective_scan")["triton"] == ("cuda",)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    "b,d,l,n,groups",
    [(1, 5120, 800, 16, (0, 0)), (2, 1024, 2048, 16, (0, 0)), (1, 1536, 1000, 64, (0, 0)),
     (2, 512, 777, 128, (4, 4)), (1, 256, 300, 7, (2, 1))],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_matches_ref(b, d, l, n, groups, dtype):
    with backend.use_backend("triton"):
        assert backend.resolve("selective_scan", "cuda") is selective_scan_triton
    _compare(_inputs(b, d, l, n, groups, dtype=dtype, device="cuda"), 1e-3 if dtype == torch.float32 else 2e-2)


@pytest.mark.gpu
@gpu
def test_gpu_no_optional_arguments():
    t = _inputs(1, 2048, 513, 16, device="cuda", optional=False)
    with torch.no_grad():  # without softplus a negative delta makes exp(delta * A) grow without bound
        t["delta"].copy_(t["delta"].abs())
    _compare(t, 1e-3, softplus=False)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_mamba1_layout(dtype):
    _compare(_mamba1_layout(1, 5120, 800, 16, dtype=dtype, device="cuda"), 1e-3 if dtype == torch.float32 else 2e-2)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("b,d,l,n,groups", [(64, 5120, 168, 16, (0, 0)), (8, 1536, 1000, 16, (0, 0)),
                                            (4, 512, 77, 64, (4, 4))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ahead", [False, True])
def test_gpu_sequential_inference_matches_ref(monkeypatch, b, d, l, n, groups, dtype, ahead):
    monkeypatch.setattr(fused_recurrent, "MIN_ROW_CHANNELS", 1)
    monkeypatch.setattr(fused_recurrent, "AHEAD", ahead)
    _compare_inference(_inputs(b, d, l, n, groups, dtype=dtype, device="cuda"), 1e-3 if dtype == torch.float32 else 2e-2)
