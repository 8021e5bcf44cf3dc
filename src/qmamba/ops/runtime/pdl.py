"""Programmatic dependent launch (PDL) for the Triton kernels of a decode step.

A batch-1 decode step is a chain of short kernels, and between two of them the GPU sits idle while the
next grid is launched and its programs start. On Hopper and later a kernel launched with PDL may be
scheduled while the kernel before it is still running: each such kernel begins with

    gdc_wait()               # returns once the previous kernel has finished and its writes are visible
    gdc_launch_dependents()  # lets the next kernel's launch begin now

so every load and store comes after the wait (nothing can race the previous kernel) and only the launch
latency overlaps. In a CUDA graph the launches become programmatic edges. Off with QMAMBA_PDL=0, and
off before Hopper, in Triton's interpreter, and on Tritons without the grid-dependency ops.
"""

from __future__ import annotations

import functools
import os

import torch

from qmamba.ops import backend


@functools.cache
def _device_ok(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def enabled(device: torch.device) -> bool:
    """Whether kernels on ``device`` launch with PDL (pass as the kernel's PDL constexpr and launch_pdl)."""
    if device.type != "cuda" or os.environ.get("QMAMBA_PDL", "1") == "0" or backend.triton_interpreted():
        return False
    try:
        import triton.language as tl
        if not hasattr(tl.extra.cuda, "gdc_wait"):
            return False
    except (ImportError, AttributeError):
        return False
    return _device_ok(device.index if device.index is not None else torch.cuda.current_device())


def launch_options(on: bool) -> dict:
    """Keyword arguments of a kernel launch: nothing when off (Tritons before PDL know no such option)."""
    return {"launch_pdl": True} if on else {}
