"""Local cross-attention of the query connectors: query i reads only its own contiguous slice of the keys.

    slices.py    ``local_slices(q, p)``: each query's slice, padded to the longest, and the dense mask (cached)
    naive.py     ``local_attention_naive``: k and v of every key, SDPA with the dense (q, p) mask (ground truth,
                 and what the connectors run by default)
    absorbed.py  ``local_attention_absorbed``: k_proj and v_proj absorbed into the queries and outputs, scores
                 only within each slice, no (q, p) matrix
    fused.py     ``local_attention_fused``: the absorbed algorithm's forward as one Triton kernel (its reference:
                 absorbed.py), the absorbed gradients recomputed; needs Triton and a GPU (or its interpreter)

The first two are pure PyTorch and run on every device and under every ``ops.backend`` choice.
``use_local_attention("absorbed")`` or ``("fused")`` runs that algorithm inside a block ("fused" falls back
to "absorbed" where Triton cannot run); the dense mask stays the default, chosen by ``benchmarks/projector.py``
(benchmarks/RESULTS.md, "The local cross-attention's default"). The parameters the absorbed algorithm does not
read (``k_proj.bias``, whose gradient is exactly zero, and with one key per query everything that only makes
scores) get no gradient; the trainer gives them a zero one so that every trainable parameter has optimizer state
and checkpoints resume.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from qmamba.errors import ConfigError
from qmamba.ops.local_attention.absorbed import local_attention_absorbed
from qmamba.ops.local_attention.naive import local_attention_naive
from qmamba.ops.local_attention.slices import LocalSlices, local_slices


def _fused(q, kv, k_weight, k_bias, v_weight, v_bias, n_heads: int):
    """``fused.local_attention_fused``, imported on first use; the absorbed algorithm without Triton."""
    try:
        from qmamba.ops.local_attention.fused import local_attention_fused
    except ImportError:
        return local_attention_absorbed(q, kv, k_weight, k_bias, v_weight, v_bias, n_heads)
    return local_attention_fused(q, kv, k_weight, k_bias, v_weight, v_bias, n_heads)


ALGORITHMS = {"absorbed": local_attention_absorbed, "fused": _fused, "naive": local_attention_naive}
_CHOICE: contextvars.ContextVar[str] = contextvars.ContextVar("qmamba_local_attention", default="naive")


@contextlib.contextmanager
def use_local_attention(name: str) -> Iterator[None]:
    """Run ``local_attention`` with algorithm ``name`` ('absorbed', 'fused' or 'naive') inside the block."""
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
