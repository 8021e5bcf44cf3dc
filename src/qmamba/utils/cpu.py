"""CPU-side settings that change training speed a lot on Linux.

PyTorch's CPU training allocates and frees many large tensors per step. glibc hands allocations above
its mmap threshold straight back to the kernel, which zeroes fresh pages on the next allocation, so the
kernel's page zeroing becomes part of every step. Raising the mmap and trim thresholds keeps the memory in
the process and reuses it (``keep_freed_memory``).

PyTorch's CPU ops split their work over OpenMP threads, which wait for each other at the end of every op.
libgomp's waiting thread spins a long while before it sleeps; on cores shared with other processes it spins
through its time slice while the thread it waits for is descheduled, so a training step of many small ops
takes several times its CPU work. A short spin (``limit_openmp_spin``) hands the core back instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
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


OMP_SPIN_COUNT = 3000  # libgomp's default is 300,000 spins before a waiting thread sleeps


def limit_openmp_spin(count: int = OMP_SPIN_COUNT) -> bool:
    """Set ``GOMP_SPINCOUNT=count`` for this process and its children, unless the user chose a wait policy
    (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` already set) or torch is already imported (libgomp reads its
    environment once, when torch loads it): call it before the first ``import torch``. Returns whether it set it.

    Only when threads wait changes, not how an op's work is split over them: results stay bit for bit the same.
    Other OpenMP runtimes ignore the variable."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = str(count)
    log.debug("OpenMP: GOMP_SPINCOUNT=%d (waiting threads sleep after a short spin)", count)
    return True
