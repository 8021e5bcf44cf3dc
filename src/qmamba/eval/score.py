"""``score_task``: score a predictions file of any supported format against a benchmark's annotations.

Accepted predictions (spec sections 2-7 and issue 4), detected from the first record's fields:

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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EmptyPredictionsError, EvalFileError, EvalOptionError, PredictionMismatchError
from qmamba.eval.io import read_json_any, read_table, require_fields, write_jsonl
from qmamba.eval.scoring.mmbench import EXTRACTORS
from qmamba.eval.scoring.vqav2 import PIPELINES

MISSING = ("wrong", "skip", "error")
# Options each task takes; the first value is the default.
TASK_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "vqav2": {"pipeline": PIPELINES, "missing": MISSING},
    "vizwiz": {"pipeline": PIPELINES, "missing": MISSING},
    "textvqa": {"missing": MISSING},
    "gqa": {"missing": MISSING},
    "pope": {"missing": ("error", "skip")},
    "mmbench": {"extractor": EXTRACTORS, "missing": MISSING},
}
MAIN_METRIC = {"vqav2": "overall", "vizwiz": "overall", "textvqa": "accuracy", "gqa": "accuracy",
               "pope": "f1_mean_of_splits", "mmbench": "overall"}


def resolve_options(task: str, options: dict[str, Any]) -> dict[str, str]:
    """Fill defaults; reject unknown tasks, options and values with the allowed ones."""
    if task not in TASK_OPTIONS:
        raise EvalOptionError(f"unknown task {task!r}; choose one of {sorted(TASK_OPTIONS)}")
    allowed = TASK_OPTIONS[task]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise EvalOptionError(f"task {task!r} takes no option(s) {unknown}; it takes {sorted(allowed)}")
    resolved = {k: (options.get(k) or values[0]) for k, values in allowed.items()}
    for key, value in resolved.items():
        if value not in allowed[key]:
            raise EvalOptionError(f"task {task!r}: {key}={value!r} is not one of {allowed[key]}")
    return resolved


def read_prediction_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of a predictions file: JSON array, JSON lines, TSV or XLSX. Empty -> EmptyPredictionsError."""
    path = Path(path)
    if path.suffix.lower() in (".tsv", ".xlsx"):
        records: Any = read_table(path)
    else:
        records = read_json_any(path, record_keys=("question_id", "questionId", "image", "index"))
        if isinstance(records, dict):
            raise EvalFileError(f"{path}: a JSON object with keys {sorted(records)[:6]}; predictions must be a "
                                "JSON array or JSON lines of records (is this an annotations file?)")
    if not records:
        raise EmptyPredictionsError(f"{path}: no predictions in the file; did the run write any answers?")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise EvalFileError(f"{path}: record {i} is a {type(rec).__name__}, expected an object")
    return records


def keyed_predictions(path: Path, records: list[dict[str, Any]], id_field: str, text_field: str,
                      expected: str) -> dict[str, str]:
    """{str(id): text}; a missing field, a non-string text or a repeated id raises, naming the record."""
    require_fields(path, records, (id_field, text_field), expected)
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for i, rec in enumerate(records):
        key, text = str(rec[id_field]), rec[text_field]
        if not isinstance(text, str):
            raise EvalFileError(f"{path}: record {i} field {text_field!r} is {text!r}, expected a string")
        if key in out:
            raise PredictionMismatchError(
                f"{path}: {id_field} {rec[id_field]!r} appears in records {first[key]} and {i}; keep one answer "
                "per question (a resumed run must not write an id twice)")
        out[key], first[key] = text, i
    return out


def check_coverage(path: Path, preds: dict[str, Any], known: set[str], expected: list[str], what: str,
                   missing_policy: str) -> list[str]:
    """Unknown ids always raise; returns the expected ids without a prediction (raises if policy 'error')."""
    unknown = [k for k in preds if k not in known]
    if unknown:
        raise PredictionMismatchError(
            f"{path}: {len(unknown)} prediction(s) for questions not in {what}, e.g. {unknown[:5]}; "
            "were they made for another split or questions file?")
    missing = [k for k in expected if k not in preds]
    if missing and missing_policy == "error":
        raise PredictionMismatchError(
            f"{path}: no answer for {len(missing)} of {len(expected)} questions of {what}, e.g. {missing[:5]}; "
            "finish the run, or score with missing='wrong' (count them as 0) or 'skip' (answered ones only)")
    return missing


def counts(n_questions: int, preds: dict[str, Any], missing: list[Any], policy: str) -> dict[str, Any]:
    """The bookkeeping every metrics.json carries next to the scores."""
    return {
        "n_questions": n_questions, "n_predictions": len(preds), "n_missing": len(missing),
        "n_empty_text": sum(1 for t in preds.values() if isinstance(t, str) and not t.strip()),
        "missing_policy": policy, "complete": not missing,
    }


def only_file(task: str, annotations: list[Path], example: str) -> Path:
    if len(annotations) != 1:
        raise EvalOptionError(f"{task}: give exactly one annotations file ({example}), got {len(annotations)}")
    return annotations[0]


def score_task(task: str, annotations: list[str | Path] | str | Path, predictions: str | Path,
               questions: str | Path | None = None, per_question: str | Path | None = None,
               **options: Any) -> dict[str, Any]:
    """Score ``predictions`` for ``task`` against ``annotations``; write per-question JSONL if asked.

    Options: ``pipeline`` ('llava' | 'official', vqav2/vizwiz), ``extractor`` (mmbench: 'vlmevalkit' |
    'vlmevalkit-aca64dbb' | 'opencompass-2023'), ``missing`` ('wrong' | 'skip' | 'error').
    Returns ``{"task", "main_metric", "main", "metrics", "counts", "options", "files"}``; scores in percent.
    """
    from qmamba.eval.adapters import ADAPTERS

    opts = resolve_options(task, options)
    anns = [Path(annotations)] if isinstance(annotations, (str, Path)) else [Path(a) for a in annotations]
    pred_path = Path(predictions)
    records = read_prediction_records(pred_path)
    metrics, rows, count = ADAPTERS[task](anns, pred_path, records, Path(questions) if questions else None, opts)
    if per_question is not None:
        write_jsonl(per_question, rows)
    return {
        "task": task, "main_metric": MAIN_METRIC[task], "main": metrics[MAIN_METRIC[task]],
        "metrics": metrics, "counts": count, "options": opts,
        "files": {"annotations": [str(a) for a in anns], "predictions": str(pred_path),
                  "questions": str(questions) if questions else None},
    }
