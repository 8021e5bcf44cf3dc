"""Right padding of a Mamba-1 sequence to the length at which the channels-first scan reads aligned rows.

The channels-first layout (``projections``) puts the sequence length in every row stride: at a length that is
not a multiple of 8 no row is 16-byte aligned and cuBLAS falls back to its align-1 kernels, and Triton
vectorises the chunked scan's loads only for strides divisible by 16. A sequence therefore runs right-padded
(``pad_to_aligned``, asked once per sequence) and its output is cropped. The scan is causal, so real positions
never see the padding; a scan that carries its state skips it (``skip_padding``, and the conv state takes only
the real inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# right-pad prefill / training lengths to the scan's aligned multiple (``pad_to_aligned``); None: on CUDA only,
# where the rows' alignment picks the kernels (a CPU would only do more work)
PAD_LENGTHS: bool | None = None


def sequential_scan_module():
    """The module of the sequential selective-scan kernel (its choice ``sequential_for``), or None without
    Triton. The one place the padding rule imports a kernel from."""
    try:
        from qmamba.ops.selective_scan import fused_recurrent
    except ImportError:  # no Triton: the reference scan
        return None
    return fused_recurrent


def length_multiple(rows: int, channels: int, d_state: int, grad: bool) -> int:
    """The multiple of the sequence length at which a scan of (rows, channels, l) inputs laid out along l
    reads aligned rows. 16 for the chunk-parallel Triton kernels: Triton vectorises the loads of a stride only
    when it sees it divisible by 16. 8 (16-byte bf16 rows, for cuBLAS's fast kernels around the scan) where
    the sequential kernel runs (inference on many rows, one position at a time), and without Triton.
    Multiples chosen by captured LM prefills (``qmamba bench --only lm-mamba1``, benchmarks/profile_lm.py)."""
    seq = sequential_scan_module()
    if seq is None:
        return 8
    return 8 if seq.sequential_for(rows, channels, d_state, grad) else 16


def pad_to_aligned(hidden: Tensor, mask: Tensor | None, d_inner: int, d_state: int,
                   keeps_state: bool) -> tuple[Tensor, Tensor | None]:
    """Right-pad a sequence (b, l, d) with zeros to the length multiple the scan reads aligned rows at
    (``length_multiple`` for the mixer's d_inner and d_state): (hidden (b, lp, d), mask (b, lp) with 0 on the
    padding, or None). The caller keeps l: the scans take it so a carried state skips the padding
    (``skip_padding``), and the output is cropped to it.

    The rule, in one place: lengths up to 16 run as they are; so does a sequence whose state is carried with
    gradients on (its dt stays finite for the backward); on a CPU everything does unless ``PAD_LENGTHS``
    says otherwise."""
    b, l, _ = hidden.shape
    grad = torch.is_grad_enabled()
    pads = PAD_LENGTHS if PAD_LENGTHS is not None else hidden.device.type == "cuda"
    if not pads or l <= 16 or (keeps_state and grad):
        return hidden, mask
    pad = -l % length_multiple(b, d_inner, d_state, grad)
    if pad == 0:
        return hidden, mask
    return F.pad(hidden, (0, 0, 0, pad)), None if mask is None else F.pad(mask, (0, pad))


def skip_padding(dt: Tensor, length: int | None) -> Tensor:
    """dt (b, di, l) of a scan that carries its state, its positions from ``length`` on right padding: dt =
    -inf there, in place. softplus(-inf) = 0, so exp(0 A) = 1 and no input: the state passes through the
    padding unchanged. ``length`` None or >= l: dt as it is. (With a left-padding mask, ``pad_to_aligned``
    has padded the mask with zeros, which does the same.)"""
    if length is not None and length < dt.shape[-1]:
        dt[:, :, length:] = float("-inf")
    return dt
