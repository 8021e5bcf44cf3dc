"""Timing and memory measurement: CUDA events on a GPU, ``perf_counter`` on CPU; the median of repeats.

    time_ms(fn, device, warmup, repeats)   median milliseconds of fn() after ``warmup`` untimed calls
    peak_gib(fn, device)                   peak memory allocated while fn() runs, GiB (GPU only)
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int = 2, repeats: int = 10) -> float:
    """Median time of one ``fn()`` in milliseconds, the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(max(repeats, 1)):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    synchronize(device)
    return statistics.median(times)


def peak_gib(fn: Callable[[], object], device: torch.device) -> float | None:
    """The most memory allocated on the GPU while ``fn()`` runs (GiB); None on CPU."""
    if device.type != "cuda":
        fn()
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def free_memory(device: torch.device) -> None:
    """Give cached GPU memory back after a section's models are deleted."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
