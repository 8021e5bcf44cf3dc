"""benchmarks/micro_lm_rows.py's measures on hand-made documents: reply tokens whose document starts in their row
under stream packing, and the share of reply tokens in long replies."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from testing_utils import benchmark_script


class Pieces:
    """``PieceTokens.pieces`` over documents that are their pieces' lengths."""

    def pieces(self, doc):
        return [np.zeros(n, dtype=np.int64) for n in doc.lengths]


def _doc(kind, *lengths):
    return SimpleNamespace(kind=kind, lengths=lengths)


def test_stream_coverage_counts_the_replies_cut_from_their_scene():
    rows = benchmark_script("micro_lm_rows")
    # rows of 8: doc 1 holds positions 0-5 (reply 4-5); doc 2 holds 6-15, its reply at 12-15 lies in row 1
    # while the document starts in row 0; a chat document's reply is not counted
    docs = [_doc("grounded", 4, 2), _doc("exist", 6, 4), _doc("chat", 1, 3)]
    assert rows.stream_coverage(Pieces(), docs, 8) == pytest.approx(2 / 6)
    assert rows.stream_coverage(Pieces(), docs, 16) == pytest.approx(1.0)


def test_long_reply_share():
    rows = benchmark_script("micro_lm_rows")
    docs = [_doc("grounded", 5, 20, 3, 2), _doc("exist", 4, 2), _doc("caption", 30)]
    share, n_long, n_short = rows.long_reply_share(Pieces(), docs, long_reply=12)
    assert (n_long, n_short) == (1, 2) and share == pytest.approx(20 / 24)
