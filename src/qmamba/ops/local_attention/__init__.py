"""Local cross-attention of the query connectors: query i reads only its own contiguous slice of the keys.

    slices.py    ``local_slices(q, p)``: each query's slice, padded to the longest, and the dense mask (cached)
    naive.py     ``local_attention_naive``: k and v of every key, SDPA with the dense (q, p) mask (ground truth,
                 and what the connectors run by default)
    absorbed.py  ``local_attention_absorbed``: k_proj and v_proj absorbed into the queries and outputs, scores
                 only within each slice, no (q, p) matrix

Both are pure PyTorch and run on every device and under every ``ops.backend`` choice, so the op is not
registered there until a kernel exists. ``use_local_attention("absorbed")`` runs the absorbed algorithm inside
a block; the dense mask stays the default, chosen by ``benchmarks/projector.py`` (benchmarks/RESULTS.md, "The
local cross-attention's default"). The parameters the
absorbed algorithm does not read (``k_proj.bias``, whose gradient is exactly zero, and with one key per query
everything that only makes scores) get no gradient; the trainer gives them a zero one so that every trainable
parameter has optimizer state and checkpoints resume.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from qmamba.errors import ConfigError
from qmamba.ops.local_attention.absorbed import local_attention_absorbed
from qmamba.ops.local_attention.naive import local_attention_naive
from qmamba.ops.local_attention.slices import LocalSlices, local_slices

ALGORITHMS = {"absorbed": local_attention_absorbed, "naive": local_attention_naive}
_CHOICE: contextvars.ContextVar[str] = contextvars.ContextVar("qmamba_local_attention", default="naive")


@contextlib.contextmanager
def use_local_attention(name: str) -> Iterator[None]:
    """Run ``local_attention`` with algorithm ``name`` ('absorbed' or 'naive') inside the block."""
    if name not in ALGORITHMS:
        raise ConfigError(f"local attention algorithm {name!r}; use one of {tuple(ALGORITHMS)}")
    token = _CHOICE.set(name)
    try:
        yield
    finally:
        _CHOICE.reset(token)


def local_attention(q, kv, k_weight, k_bias, v_weight, v_bias, n_heads: int):
    """Local multi-head cross-attention before ``out_proj``: q (b, q, d) projected queries, kv (b, p, d_kv)
    -> (b, q, d); arguments as ``local_attention_naive``."""
    return ALGORITHMS[_CHOICE.get()](q, kv, k_weight, k_bias, v_weight, v_bias, n_heads)


__all__ = ["ALGORITHMS", "LocalSlices", "local_attention", "local_attention_absorbed", "local_attention_naive",
           "local_slices", "use_local_attention"]
