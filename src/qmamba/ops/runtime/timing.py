"""Timing and memory measurement, the one timer that ops/, bench/ and benchmarks/ use.

    time_ms(fn, device, warmup, repeats)   median milliseconds of fn() after ``warmup`` untimed calls
                                           (CUDA events on a GPU, ``perf_counter`` on CPU)
    wall_ms(fn, runs)                      mean milliseconds of ``runs`` back-to-back calls (GPU), launches
                                           overlapping as in a loop of calls
    graph_us(fn, copies, x, reps)          microseconds per call of fn(x, w), w cycling through ``copies``,
                                           replayed from one CUDA graph (a kernel as a decode step runs it)
    weight_copies(like)                    stand-ins for distinct layers' weights, for ``graph_us``
    bench_ms(fn)                           the median of ``triton.testing.do_bench`` (milliseconds)
    peak_gib(fn, device)                   peak memory allocated while fn() runs, GiB (GPU only)
    free_memory(device)                    give cached GPU memory back

``graph_us`` replays many launches from one CUDA graph, each on a different copy of its weight, so every
launch reads the weight from HBM (a 64-layer step never finds a layer's weights in L2) and consecutive
launches overlap as they do in the step (PDL edges, no host in between).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from qmamba.utils.graph_capture import capture


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


def wall_ms(fn: Callable[[], object], runs: int = 10, warmup: int = 3) -> float:
    """Mean milliseconds of one ``fn()`` over ``runs`` calls made back to back between two CUDA events."""
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(runs):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / runs


def graph_us(fn, copies: list[Tensor], x, reps: int = 5) -> float:
    """Microseconds per call of fn(x, w) for w cycling through ``copies``, replayed from one CUDA graph."""
    for w in copies[:2]:
        fn(x, w)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    capture(graph, lambda: [fn(x, w) for _ in range(reps) for w in copies])  # a failed capture is closed
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (3 * reps * len(copies))


def weight_copies(like: Tensor, past_bytes: int = 300 << 20) -> list[Tensor]:
    """Views shaped like ``like`` into one uninitialised buffer, enough of them to exceed ``past_bytes``
    (at least two): stand-ins for distinct layers' weights when only the time matters."""
    count = max(2, -(-past_bytes // (like.numel() * like.element_size())))
    buf = torch.empty(count * like.numel(), device=like.device, dtype=like.dtype)
    return [chunk.view(like.shape) for chunk in buf.split(like.numel())]


def bench_ms(fn: Callable[[], object], warmup: int = 10, rep: int = 50) -> float:
    """The median of ``triton.testing.do_bench(fn)`` in milliseconds (GPU, Triton needed)."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


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
