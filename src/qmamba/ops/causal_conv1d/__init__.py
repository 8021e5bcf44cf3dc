"""Causal depthwise conv1d over a sequence, and its one-step update.

    naive.py   ``causal_conv1d_ref``, ``causal_conv1d_update_ref`` in PyTorch (the ground truth and ``ref``)
    direct.py  the Triton kernels: direct convolution from shifted tile loads (forward, backward, update)
"""

from qmamba.ops import backend
from qmamba.ops.causal_conv1d.naive import causal_conv1d_ref, causal_conv1d_update_ref

backend.register("causal_conv1d", "ref", causal_conv1d_ref)
backend.register("causal_conv1d_update", "ref", causal_conv1d_update_ref)


def register_triton() -> None:
    """Register the Triton kernels (``ops/runtime/triton_backend.py`` calls this when Triton and a GPU are there)."""
    from qmamba.ops.causal_conv1d.direct import causal_conv1d_triton, causal_conv1d_update_triton

    backend.register("causal_conv1d", "triton", causal_conv1d_triton, devices=("cuda",))
    backend.register("causal_conv1d_update", "triton", causal_conv1d_update_triton, devices=("cuda",))


def causal_conv1d(x, weight, bias=None, **kwargs):
    """Causal conv on the chosen backend; arguments as ``causal_conv1d_ref``."""
    return backend.resolve("causal_conv1d", x.device.type)(x, weight, bias, **kwargs)


def causal_conv1d_update(x, conv_state, weight, bias=None, **kwargs):
    """One conv step on the chosen backend; arguments as ``causal_conv1d_update_ref``."""
    return backend.resolve("causal_conv1d_update", x.device.type)(x, conv_state, weight, bias, **kwargs)


__all__ = ["causal_conv1d", "causal_conv1d_ref", "causal_conv1d_update", "causal_conv1d_update_ref", "register_triton"]
