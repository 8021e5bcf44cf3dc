"""``score_task``: score a predictions file of any supported format against a benchmark's annotations.

Accepted predictions (docs/scoring.md, section "Predictions files and missing answers"), detected from
the first record's fields:

=========  ============================================================  =====================================
task       official results format                                       qmamba / LLaVA answers JSONL
=========  ============================================================  =====================================
vqav2      ``[{"question_id", "answer"}]``                               ``{"question_id", "text"}``
textvqa    ``[{"question_id", "answer"[, "prompt"]}]``                   ``{"question_id", "prompt", "text"}``
vizwiz     ``[{"image", "answer"}]``                                     ``{"question_id", "text"}`` (+ questions)
gqa        ``[{"questionId", "prediction"}]`` (already converted)        ``{"question_id", "text"}`` (converted)
pope       JSONL ``{"question_id", "text"[, "category"]}``               same
mmbench    TSV/XLSX with ``index`` and ``prediction`` columns            ``{"question_id" (= index), "text"}``
=========  ============================================================  =====================================

Malformed input raises an ``EvalFileError`` / ``PredictionMismatchError`` naming file, record and field:
a missing field, a file of another format, an empty file, a duplicate id, or a prediction for a question
the annotations do not hold. Questions WITHOUT a prediction follow ``missing``: ``"wrong"`` (default;
scored 0 and counted in ``counts.n_missing``), ``"skip"`` (left out; the score covers answered
questions only, as LLaVA's TextVQA script does) or ``"error"``. POPE has no "wrong" answer to give a
missing question (its metrics need a yes/no), so it takes ``"error"`` (its default) or ``"skip"``.
Each benchmark's adapter and scorer live in its module under ``qmamba.eval.tasks``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalOptionError
from qmamba.eval.tasks import TASKS, TaskSpec


def _task(task: str) -> TaskSpec:
    if task not in TASKS:
        raise EvalOptionError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    return TASKS[task]


def resolve_options(task: str, options: dict[str, Any]) -> dict[str, str]:
    """Fill defaults; reject unknown tasks, options and values with the allowed ones."""
    return _task(task).resolve_options(options)


def score_task(task: str, annotations: list[str | Path] | str | Path, predictions: str | Path,
               questions: str | Path | None = None, per_question: str | Path | None = None,
               **options: Any) -> dict[str, Any]:
    """Score ``predictions`` for ``task`` against ``annotations``; write per-question JSONL if asked.

    Options: ``pipeline`` ('llava' | 'official', vqav2/vizwiz), ``extractor`` (mmbench: 'vlmevalkit' |
    'vlmevalkit-aca64dbb' | 'opencompass-2023'), ``missing`` ('wrong' | 'skip' | 'error').
    Returns ``{"task", "main_metric", "main", "metrics", "counts", "options", "files"}``; scores in percent.
    """
    return _task(task).score(annotations, predictions, questions, per_question, **options)
