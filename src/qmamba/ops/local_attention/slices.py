"""The key slices of the local cross-attention mask (the Q-Mamba paper's Figure 3), derived from (q, p) alone.

    q <= p  the slices partition the keys in raster order: the first p % q queries own p // q + 1 keys, the
            others p // q, each slice starting where the one before ends.
    q > p   query i owns key floor(i p / q) alone (neighbouring queries may share a key).

Padded to L = ceil(p / q) keys a query, the slices are a (q, L) grid of key indices (``padded_index``, the
padding repeating a slice's last key) with a (q, L) mask of the padding (``padding``); when q divides p the
grid is the keys themselves in order (``uniform``). ``local_slices(q, p)`` is cached; its ``mask`` equals
``models.connectors.attention.local_attention_mask``. The device tensors are made with aranges (no copy from
the host, so they can be made inside CUDA-graph capture) and kept per device when made outside capture.
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
class LocalSlices:
    """Query i reads keys starts[i] .. starts[i] + lengths[i] - 1 and no other."""

    n_queries: int
    n_keys: int
    starts: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def max_length(self) -> int:
        """L: the longest slice (1 when every query reads a single key, as for q >= p)."""
        return max(self.lengths)

    @property
    def uniform(self) -> bool:
        """Whether the slices tile the keys exactly: equal lengths, q * L == p (q divides p)."""
        return self.n_queries * self.max_length == self.n_keys

    def owners(self, device=None) -> Tensor:
        """(q,) long: each query's first key (its only one when ``max_length`` is 1)."""
        return _cached(self, "owners", device, lambda: self._starts_lengths(device)[0])

    def mask(self, device=None) -> Tensor:
        """(q, p) bool, True where query i may read key j: the dense form of the slices."""
        def make():
            starts, lengths = self._starts_lengths(device)  # (q,), (q,)
            keys = torch.arange(self.n_keys, device=device)  # (p,)
            return (keys[None, :] >= starts[:, None]) & (keys[None, :] < (starts + lengths)[:, None])  # (q, p)
        return _cached(self, "mask", device, make)

    def padded_index(self, device=None) -> Tensor:
        """(q * L,) long: query i's keys at [i L, i L + lengths[i]), then its last key again as padding."""
        def make():
            starts, lengths = self._starts_lengths(device)  # (q,), (q,)
            offset = torch.arange(self.max_length, device=device)  # (L,)
            return (starts[:, None] + torch.minimum(offset[None, :], lengths[:, None] - 1)).flatten()  # (q * L,)
        return _cached(self, "padded_index", device, make)

    def padding(self, device=None) -> Tensor:
        """(q, L) bool: True at the padding of ``padded_index`` (keys a query does not read)."""
        def make():
            offset = torch.arange(self.max_length, device=device)  # (L,)
            return offset[None, :] >= self._starts_lengths(device)[1][:, None]  # (q, L)
        return _cached(self, "padding", device, make)

    def _starts_lengths(self, device) -> tuple[Tensor, Tensor]:
        """(q,), (q,) long: ``starts`` and ``lengths`` as tensors, from aranges on the device."""
        q, p = self.n_queries, self.n_keys
        i = torch.arange(q, device=device)  # (q,)
        if q > p:
            return i * p // q, torch.ones_like(i)
        base, extra = divmod(p, q)
        return i * base + torch.clamp(i, max=extra), base + (i < extra).long()  # the longer slices come first


@functools.lru_cache(maxsize=256)
def local_slices(n_queries: int, n_keys: int) -> LocalSlices:
    """The slices of ``n_queries`` queries over ``n_keys`` keys (see the module docstring)."""
    q, p = n_queries, n_keys
    if q < 1 or p < 1:
        raise ConfigError(f"local attention needs at least one query and one key; got {q} queries, {p} keys")
    if q > p:
        return LocalSlices(q, p, tuple(i * p // q for i in range(q)), (1,) * q)
    base, extra = divmod(p, q)
    lengths = tuple(base + (i < extra) for i in range(q))
    return LocalSlices(q, p, tuple(itertools.accumulate(lengths[:-1], initial=0)), lengths)


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
