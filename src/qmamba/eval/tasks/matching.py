"""Reading a predictions file and matching it to a benchmark's annotations, for every benchmark.

The rules (docs/scoring.md, section "Predictions files and missing answers"): a predictions file is a
JSON array, JSON lines, TSV or XLSX of records; ids are compared as strings; a missing field, a
non-string answer, a repeated id or an answer to a question the annotations do not hold raises,
naming the file and the record. Questions without an answer follow the ``missing`` policy
(``MISSING``): ``"wrong"`` scores them 0, ``"skip"`` leaves them out, ``"error"`` raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EmptyPredictionsError, EvalFileError, EvalOptionError, PredictionMismatchError
from qmamba.eval.io import read_json_any, read_table, require_fields

MISSING = ("wrong", "skip", "error")


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


def check_gt_answers(path: Path, records: list[dict[str, Any]], id_field: str, exactly: int | None = None) -> None:
    """Every record has a non-empty list of GT answers: strings (``exactly`` of them: TextVQA) or
    {"answer": ...} dicts (VQAv2, VizWiz)."""
    for rec in records:
        answers = rec["answers"]
        if exactly is not None:
            ok = isinstance(answers, list) and len(answers) == exactly and all(isinstance(a, str) for a in answers)
            need = f"a list of {exactly} strings"
        else:
            ok = isinstance(answers, list) and bool(answers) and all(isinstance(a, dict) and "answer" in a
                                                                     for a in answers)
            need = 'a non-empty list of {"answer": ...} objects'
        if not ok:
            shown = f"{len(answers)} items" if isinstance(answers, list) else repr(answers)
            raise EvalFileError(f"{path}: {id_field} {rec[id_field]!r} has answers of {shown}; expected {need}")
