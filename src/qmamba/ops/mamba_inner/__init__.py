"""The layout of Mamba-1's sequence path (prefill and training), kept behind the op as mamba_ssm keeps it
inside ``mamba_inner_fn``: the model states the math, these functions choose how it lies in memory.

The conv and selective-scan kernels walk the sequence, so between ``in_proj`` and ``out_proj`` a mixer's
activations are channels-first, (b, c, l) with stride 1 along l (``projections``):

    linear_channels_first(hidden, in_proj)   hidden (b, l, d)  -> xz (b, 2 di, l)
    project_channels(weight, x)              x (b, c, l)       -> (b, out, l)     x_proj, dt_proj
    linear_from_channels(y, out_proj)        y (b, di, l)      -> (b, l, d)

The length is then every row's stride, so a sequence runs right-padded to the length the scan reads aligned
rows at (``padding``):

    pad_to_aligned(hidden, mask, d_inner, d_state, keeps_state)   (b, l, d) -> (b, lp, d), mask (b, lp)
    skip_padding(dt, length)     dt (b, di, lp): -inf after the real positions, for a scan carrying its state

A stack of layers pads once per sequence and hands each layer the real length. The switch is
``qmamba.ops.mamba_inner.padding.PAD_LENGTHS`` (None: pad on CUDA only).
"""

from qmamba.ops.mamba_inner.padding import length_multiple, pad_to_aligned, skip_padding
from qmamba.ops.mamba_inner.projections import linear_channels_first, linear_from_channels, project_channels

__all__ = ["length_multiple", "linear_channels_first", "linear_from_channels", "pad_to_aligned",
           "project_channels", "skip_padding"]
