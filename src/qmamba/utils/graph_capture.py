"""CUDA graph capture that leaves the process usable when it fails.

A capture that raises (a host sync inside it, an allocator refusal) leaves PyTorch's CUDA generator believing
it is still being captured: every later random op outside a graph then fails with "Offset increment outside
graph capture encountered unexpectedly", so one failed capture would take down everything after it.

Python's cycle collector is held off during a capture: a collection inside one runs the destructors of the
CUDA objects it frees (graphs and events left in reference cycles by earlier measurements) in the middle of
it, and a CUDA call not permitted while a stream captures fails the capture under way ("operation not
permitted when stream is capturing", then "operation failed due to a previous error during capture"), as a
decode-step capture did after many measuring captures had run in the same process.

Captures run in CUDA's thread-local error mode: only the capturing thread's unsafe calls fail the capture. In
the default global mode, any thread's memory copy or allocation during a capture fails it, so a server that
moves a request's inputs to the GPU on its own threads while the engine thread captures an admission graph
lost that capture, and the engine fell back to eager admissions.

A capture that fails can leave its memory pool recording allocations and the capturing thread on the capture
stream; both are undone here, so the next capture into the same pool can begin.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)


def capture(graph: torch.cuda.CUDAGraph, fn: Callable[[], Any], pool=None) -> Any:
    """Capture ``fn()`` into ``graph`` (sharing memory ``pool`` if given) and return what it returned; if the
    capture raises, the generator's capture state is closed before the error propagates."""
    collecting = gc.isenabled()
    gc.disable()  # cycles wait until the capture has ended
    stream = torch.cuda.current_stream()
    try:
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            return fn()
    except RuntimeError:
        torch.cuda.set_stream(stream)  # the graph's context did not get to restore it
        end_pool_recording(graph)
        end_failed_capture()
        raise
    finally:
        if collecting:
            gc.enable()


def end_pool_recording(graph: torch.cuda.CUDAGraph) -> None:
    """Stop the allocator from recording into ``graph``'s pool, which a capture that failed before its end left
    open ("beginAllocateToPool: already recording to mempool_id" at the next capture into that pool)."""
    # RuntimeError: the capture's own end closed it; AttributeError: this build has no such call
    with contextlib.suppress(RuntimeError, AttributeError):
        torch._C._cuda_endAllocateToPool(torch.cuda.current_device(), graph.pool())


def end_failed_capture() -> None:
    """One empty capture that completes closes the capture state a failed one left behind."""
    try:
        torch.cuda.synchronize()
        with torch.cuda.graph(torch.cuda.CUDAGraph(), capture_error_mode="thread_local"):
            pass
    except RuntimeError as err:  # nothing more to do: the original error is the one to report
        log.warning("could not reset the CUDA generator after a failed graph capture: %s", err)
