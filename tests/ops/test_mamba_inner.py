"""The layout of Mamba-1's sequence path (ops.mamba_inner): the channels-first projections against plain
linear layers, and the padding rule (when and how much, PAD_LENGTHS, the multiple of the kernel that runs)."""

from __future__ import annotations

import pytest
import torch
from testing_utils import assert_close

from qmamba.ops.mamba_inner import linear_channels_first, linear_from_channels, padding, project_channels


@pytest.mark.parametrize("batch", [1, 3])
def test_channel_projections_are_linear_layers_laid_out_along_the_sequence(batch):
    """Mamba-1's in_proj / x_proj / dt_proj give (b, out, l) with stride 1 along l at every batch size (the scan
    kernels read along l), equal to F.linear, with gradients to both operands."""
    lin = torch.nn.Linear(6, 10, bias=True, dtype=torch.float64)
    hidden = torch.randn(batch, 7, 6, dtype=torch.float64, requires_grad=True)
    y = linear_channels_first(hidden, lin)
    assert y.shape == (batch, 10, 7) and y.stride(-1) == 1
    assert_close(y, lin(hidden).transpose(1, 2), 1e-12, "in_proj")
    w = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
    x = torch.randn(batch, 10, 7, dtype=torch.float64, requires_grad=True)
    out = project_channels(w, x)
    assert out.shape == (batch, 4, 7) and out.is_contiguous()
    assert_close(out, torch.einsum("oc,bcl->bol", w, x), 1e-12, "x_proj")
    assert torch.autograd.gradcheck(project_channels, (w, x)) and torch.autograd.gradcheck(
        lambda h: linear_channels_first(h, lin), (hidden,))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("l", [7, 16])
def test_linear_from_channels_is_linear_on_the_transpose(bias, grad, l):
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 5, bias=bias)
    y = torch.randn(3, 6, l)  # (b, c, l)
    want = y.transpose(1, 2) @ linear.weight.T + (linear.bias if bias else 0)
    with torch.set_grad_enabled(grad):
        got = linear_from_channels(y, linear)
    assert got.shape == (3, l, 5) and torch.allclose(got, want, atol=1e-6)
    assert got.requires_grad == grad


def test_mamba1_pads_only_on_cuda_by_default(monkeypatch):
    assert padding.PAD_LENGTHS is None
    hidden = torch.randn(1, 19, 4)
    assert padding.pad_to_aligned(hidden, None, 8, 4, keeps_state=False)[0] is hidden  # a CPU: as it is
    monkeypatch.setattr(padding, "PAD_LENGTHS", True)
    assert padding.pad_to_aligned(hidden, None, 8, 4, keeps_state=False)[0].shape[1] in (24, 32)


def test_length_multiple_follows_the_kernel_that_runs(monkeypatch):
    pytest.importorskip("triton")
    from qmamba.ops.mamba_inner import length_multiple

    fused_recurrent = padding.sequential_scan_module()
    assert length_multiple(1, 5120, 16, grad=False) == 16  # chunked: strides divisible by 16
    assert length_multiple(64, 5120, 16, grad=False) == 8  # sequential: 16-byte rows for the GEMMs
    assert length_multiple(64, 5120, 16, grad=True) == 16  # training runs chunked
    assert length_multiple(64, 5120, fused_recurrent.MAX_STATE * 2, grad=False) == 16
    monkeypatch.setattr(fused_recurrent, "MIN_ROW_CHANNELS", None)
    assert length_multiple(64, 5120, 16, grad=False) == 16


def test_skip_padding_sets_minus_inf_after_the_real_positions_in_place():
    dt = torch.randn(2, 3, 8)
    want = dt.clone()
    assert padding.skip_padding(dt, None) is dt and padding.skip_padding(dt, 8) is dt and torch.equal(dt, want)
    assert padding.skip_padding(dt, 5) is dt
    assert torch.equal(dt[:, :, :5], want[:, :, :5]) and (dt[:, :, 5:] == float("-inf")).all()
