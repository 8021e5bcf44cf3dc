"""The key slices of the local cross-attention mask (the Q-Mamba paper's Figure 3), derived from (q, p) alone.

    q <= p  the slices partition the keys in raster order: the first p % q queries own p // q + 1 keys, the
            others p // q, each slice starting where the one before ends. The queries therefore fall in at
            most two runs of equal-length adjacent slices, and the keys of a run are a view (n, L, d) of the
            features: no gather, no padding.
    q > p   query i owns key floor(i p / q) alone (neighbouring queries may share a key).

``local_slices(q, p)`` is cached; its ``mask`` equals ``models.connectors.attention.local_attention_mask``.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from qmamba.errors import ConfigError

_ON_DEVICE: dict[tuple, Tensor] = {}  # (q, p, what, device) -> tensor, made outside CUDA-graph capture


@dataclass(frozen=True)
class Run:
    """``n`` consecutive queries from query ``query``, each owning ``length`` keys, the slices adjacent from key
    ``key``: the run's keys are features[:, key : key + n * length] viewed as (n, length)."""

    query: int
    n: int
    key: int
    length: int


@dataclass(frozen=True)
class LocalSlices:
    """Query i reads keys starts[i] .. starts[i] + lengths[i] - 1 and no other.

    ``runs``: the queries as maximal runs of adjacent equal-length slices (q <= p: at most two runs covering
    every key once; q > p: the slices overlap, so ``runs`` is empty and ``owners`` gives each query's key).
    """

    n_queries: int
    n_keys: int
    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    runs: tuple[Run, ...]

    @property
    def max_length(self) -> int:
        """L: the longest slice (1 when every query reads a single key, as for q >= p)."""
        return max(self.lengths)

    def owners(self, device=None) -> Tensor:
        """(q,) long: each query's first key (its only one when ``max_length`` is 1)."""
        return _cached(self, "owners", device, lambda: self._owners(device))

    def mask(self, device=None) -> Tensor:
        """(q, p) bool, True where query i may read key j: the dense form of the slices."""
        return _cached(self, "mask", device, lambda: self._mask(device))

    def _owners(self, device) -> Tensor:
        # built from aranges on the device (no host-to-device copy: safe inside CUDA-graph capture)
        q, p = self.n_queries, self.n_keys
        if q > p:
            return torch.arange(q, device=device) * p // q  # (q,)
        base, extra = divmod(p, q)
        i = torch.arange(q, device=device)  # (q,)
        return i * base + torch.clamp(i, max=extra)  # (q,): the longer slices come first

    def _mask(self, device) -> Tensor:
        starts = self._owners(device)  # (q,)
        lengths = torch.full_like(starts, self.max_length)  # (q,)
        if self.runs:
            lengths = lengths - (torch.arange(self.n_queries, device=device) >= self.runs[0].n).long()
        keys = torch.arange(self.n_keys, device=device)  # (p,)
        return (keys[None, :] >= starts[:, None]) & (keys[None, :] < (starts + lengths)[:, None])  # (q, p)


@functools.lru_cache(maxsize=256)
def local_slices(n_queries: int, n_keys: int) -> LocalSlices:
    """The slices of ``n_queries`` queries over ``n_keys`` keys (see the module docstring)."""
    q, p = n_queries, n_keys
    if q < 1 or p < 1:
        raise ConfigError(f"local attention needs at least one query and one key; got {q} queries, {p} keys")
    if q > p:
        return LocalSlices(q, p, tuple(i * p // q for i in range(q)), (1,) * q, ())
    base, extra = divmod(p, q)
    lengths = tuple(base + (i < extra) for i in range(q))
    starts = tuple(itertools.accumulate(lengths[:-1], initial=0))
    return LocalSlices(q, p, starts, lengths, _runs(starts, lengths))


def _runs(starts: tuple[int, ...], lengths: tuple[int, ...]) -> tuple[Run, ...]:
    """Maximal runs of consecutive queries whose slices have one length and follow each other."""
    runs: list[Run] = []
    for i, (s, n) in enumerate(zip(starts, lengths)):
        last = runs[-1] if runs else None
        if last is not None and last.length == n and last.key + last.n * last.length == s:
            runs[-1] = Run(last.query, last.n + 1, last.key, n)
        else:
            runs.append(Run(i, 1, s, n))
    return tuple(runs)


def _cached(slices: LocalSlices, what: str, device, make) -> Tensor:
    """``make()``, kept per (q, p, what, device) unless made during CUDA-graph capture (whose memory is the
    graph's): a graph then reads the tensor made by an eager call before it. Made outside inference mode, so a
    tensor first made under ``torch.inference_mode`` can still be saved for a later backward."""
    key = (slices.n_queries, slices.n_keys, what, str(torch.device(device or "cpu")))
    hit = _ON_DEVICE.get(key)
    if hit is not None:
        return hit
    with torch.inference_mode(False):
        out = make()
    if not (out.is_cuda and torch.cuda.is_current_stream_capturing()):
        _ON_DEVICE[key] = out
    return out
