"""LayerState.advance: the conv state keeps the last inputs of the state, then of the sequence."""

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
