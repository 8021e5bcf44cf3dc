"""The choice a decode op measures once per shape, on first use: ``fastest`` keeps the candidate that matches
a reference and is timed fastest (timed as a decode step runs it, ``timing.graph_us``), ``measure_once``
caches it per key: ``ops.gemv``'s tiles, ``ops.step_in``'s tiles and ways for several rows, ``ops.step_out``'s
kernel or the unfused ops. ``measured_choices`` reports every cache (the bench writes it beside its figures).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

log = logging.getLogger("qmamba")
_CACHES: dict[str, dict] = {}  # op name -> its cache of measured choices (``choice_cache``)


def close_enough(got: Tensor, want: Tensor) -> bool:
    """A candidate's output against the reference's (fp32): within 2% of the reference's largest value."""
    return torch.allclose(got.float(), want, rtol=2e-2, atol=2e-2 * want.abs().max().item())


def fastest(candidates: Iterable, matches: Callable[[object], bool], timed: Callable[[object], float],
            best=None, best_us: float = float("inf"), what: str = "the candidate", baseline: str | None = None):
    """The candidate that ``matches`` (its output checked against a reference) and is ``timed`` fastest, or
    ``best`` (timed ``best_us``; named ``baseline`` in the log) if none beats it. A candidate that fails to run
    (a tile the compiler refuses) is skipped; one that cannot be timed in a CUDA graph is skipped with a
    warning. The choice is logged (INFO): a first decode call on a new shape spends its extra time here, once."""
    timed_count, start, start_us = 0, best, best_us
    for cand in candidates:
        try:
            if not matches(cand):
                continue
        except Exception:  # registers, shared memory: this Triton cannot build it
            continue
        try:
            us = timed(cand)
        except RuntimeError as e:
            log.warning("could not time %s %s (%s)", what, cand, str(e).splitlines()[0] if str(e) else type(e).__name__)
            continue
        timed_count += 1
        if us < best_us:
            best, best_us = cand, us
    log.info("measured %s once: kept %s (%.1f us; %d timed against %.1f us)", what,
             baseline if best is start and baseline else best, best_us, timed_count, start_us)
    return best


def measure_once(cache: dict, key, device: torch.device, default, measure: Callable[[], object],
                 measured_on: tuple[str, ...] = ("cuda",)):
    """``cache[key]``, filled by ``measure()`` on first use; ``default`` where nothing is measured: off the
    device types ``measured_on``, inside a CUDA-graph capture (nothing is cached then), and to a call made
    while the measurement runs (or after it raised)."""
    if key in cache:
        return cache[key]
    if device.type not in measured_on or (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
        return default
    cache[key] = default
    cache[key] = measure()
    return cache[key]


def choice_cache(name: str) -> dict:
    """The cache of op ``name``'s measured choices, for ``measure_once`` (``measured_choices`` reports it)."""
    return _CACHES.setdefault(name, {})


def measured_choices() -> dict[str, dict[str, object]]:
    """Every choice measured so far in this process, by op: {op: {its key as text: the choice}} (JSON-ready:
    a config dict, or None for the op's baseline: F.linear, the unfused ops)."""
    text = lambda key: ", ".join(map(str, key)) if isinstance(key, tuple) else str(key)  # noqa: E731
    return {name: {text(key): value for key, value in cache.items()} for name, cache in _CACHES.items() if cache}
