"""LayerState.advance and the channels-first linear of Mamba-1 layers."""

import pytest
import torch

from qmamba.models.cache import LayerState


@pytest.mark.parametrize("l", [1, 2, 3, 4, 7])
def test_advance_keeps_the_last_inputs_of_state_then_sequence(l):
    g = torch.Generator().manual_seed(l)
    conv = torch.randn(2, 5, 4, generator=g)
    inputs = torch.randn(2, 5, l, generator=g)
    state = LayerState(conv_state=conv.clone(), ssm_state=torch.zeros(2, 5, 3))
    last = torch.randn(2, 5, 3, generator=g)
    state.advance(inputs, last)
    want = torch.cat([conv, inputs], dim=-1)[:, :, -4:]  # the last 4 columns of old state + new inputs
    assert torch.equal(state.conv_state, want) and torch.equal(state.ssm_state, last)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("l", [7, 16])
def test_linear_from_channels_is_linear_on_the_transpose(bias, grad, l):
    from qmamba.models.mamba1 import linear_from_channels

    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 5, bias=bias)
    y = torch.randn(3, 6, l)  # (b, c, l)
    want = y.transpose(1, 2) @ linear.weight.T + (linear.bias if bias else 0)
    with torch.set_grad_enabled(grad):
        got = linear_from_channels(y, linear)
    assert got.shape == (3, l, 5) and torch.allclose(got, want, atol=1e-6)
    assert got.requires_grad == grad
