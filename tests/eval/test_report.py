"""`qmamba eval report`'s markdown: every line's asterisks pair up (the paper's "Cobra*" is escaped inside the
italics) and the † note is there exactly when a cell carries a †."""

from __future__ import annotations

import re

from qmamba.eval.report import save_metrics, write_report


def _result(main: float, complete: bool) -> dict:
    return {"task": "gqa", "main": main, "main_metric": "accuracy", "metrics": {},
            "counts": {"complete": complete, "n_missing": 0 if complete else 1}}


def _unescaped_stars(line: str) -> int:
    return len(re.findall(r"(?<!\\)\*", line))


def test_report_asterisks_pair_up_and_the_dagger_note_needs_a_dagger(tmp_path):
    save_metrics(_result(61.5, True), tmp_path / "complete", "micro")
    text = write_report([tmp_path / "complete"])
    assert all(_unescaped_stars(line) % 2 == 0 for line in text.splitlines()), text
    assert r"| *Cobra\* (paper Table 1)* |" in text and r"\*: reproduced by the paper's authors" in text
    assert "†" not in text
    save_metrics(_result(50.0, False), tmp_path / "partial", "partial")
    text = write_report([tmp_path / "complete", tmp_path / "partial"])
    assert "| partial | – | 50.00 † |" in text and "† incomplete" in text
