"""Causal depthwise 1-D convolution (Mamba's short conv), pure PyTorch.

    x: (b, d, l)   weight: (d, w)   bias: (d,)   conv states: (b, d, w - 1) (the inputs before x)

``causal_conv1d_ref`` convolves a whole sequence (optionally continuing from earlier inputs);
``causal_conv1d_update_ref`` takes one new input per row and updates a rolling state in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _activate(x: Tensor, activation: str | None) -> Tensor:
    if activation is None:
        return x
    if activation in ("silu", "swish"):
        return F.silu(x)
    raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")


def causal_conv1d_ref(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
    activation: str | None = None,
):
    """y[:, :, t] = act(bias + sum_k weight[:, k] * x[:, :, t - (w-1) + k]); inputs before t=0 are
    ``initial_states`` (zeros if None). Returns y (b, d, l) and, if asked, the last w-1 inputs."""
    b, d, l = x.shape
    w = weight.shape[1]
    if initial_states is None:
        initial_states = x.new_zeros(b, d, w - 1)
    xp = torch.cat([initial_states.to(x.dtype), x], dim=-1)  # (b, d, w-1+l)
    y = F.conv1d(xp, weight.to(x.dtype).unsqueeze(1), bias.to(x.dtype) if bias is not None else None, groups=d)
    y = _activate(y, activation)
    if return_final_states:
        return y, xp[:, :, -(w - 1):].clone() if w > 1 else xp[:, :, :0]
    return y


def causal_conv1d_update_ref(
    x: Tensor,
    conv_state: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """One step: x (b, d); conv_state (b, d, w) holds the last w inputs and is rolled in place. ``out``
    (b, d): written and returned instead of a new tensor; it may be x itself."""
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    y = (conv_state.float() * weight.float()).sum(-1)  # (b, d)
    if bias is not None:
        y = y + bias.float()
    y = _activate(y, activation).to(x.dtype)
    return y if out is None else out.copy_(y)
