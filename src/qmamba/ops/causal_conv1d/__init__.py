"""Causal depthwise conv1d over a sequence, and its one-step update."""

from qmamba.ops import backend
from qmamba.ops.causal_conv1d.ref import causal_conv1d_ref, causal_conv1d_update_ref

backend.register("causal_conv1d", "ref", causal_conv1d_ref)
backend.register("causal_conv1d_update", "ref", causal_conv1d_update_ref)


def causal_conv1d(x, weight, bias=None, **kwargs):
    """Causal conv on the chosen backend; arguments as ``causal_conv1d_ref``."""
    return backend.resolve("causal_conv1d", x.device.type)(x, weight, bias, **kwargs)


def causal_conv1d_update(x, conv_state, weight, bias=None, **kwargs):
    """One conv step on the chosen backend; arguments as ``causal_conv1d_update_ref``."""
    return backend.resolve("causal_conv1d_update", x.device.type)(x, conv_state, weight, bias, **kwargs)


__all__ = ["causal_conv1d", "causal_conv1d_ref", "causal_conv1d_update", "causal_conv1d_update_ref"]
