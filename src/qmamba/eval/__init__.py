"""Evaluation on VQAv2, GQA, VizWiz, TextVQA, POPE and MMBench, scored as their official scripts score.

``tasks`` holds one module per benchmark (its questions and prompt, its results file, its scorer and
the adapter for its official files; the rules are in docs/scoring.md), ``score.score_task`` scores any
predictions file, ``submission`` writes server uploads, ``report.write_report`` tabulates runs.
Imports are lazy so ``import qmamba.eval`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "score_task": "qmamba.eval.score",
    "write_report": "qmamba.eval.report",
    "TASKS": "qmamba.eval.tasks",
    "TaskSpec": "qmamba.eval.tasks",
    "EvalItem": "qmamba.eval.tasks.common",
    "answer_record": "qmamba.eval.tasks.common",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qmamba.eval' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
