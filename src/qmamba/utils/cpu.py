"""CPU-side settings that change training speed a lot on Linux.

PyTorch's CPU training allocates and frees many large tensors per step. glibc hands allocations above
its mmap threshold straight back to the kernel, which zeroes fresh pages on the next allocation, so the
kernel's page zeroing becomes part of every step. Raising the mmap and trim thresholds keeps the memory in
the process and reuses it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("qmamba")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_done = False


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Ask glibc to reuse freed memory instead of returning it to the kernel (once per process).

    Returns whether the setting took effect (False on non-glibc systems)."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):
        ok = False
    _done = ok
    if ok:
        log.debug("glibc: mmap/trim thresholds raised to %d bytes", threshold)
    return ok
