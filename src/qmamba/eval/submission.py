"""Upload files for the evaluation servers, made as LLaVA's conversion scripts make them
(docs/scoring.md, section "Server uploads").

* ``vqav2_testdev``: ``scripts/convert_vqav2_for_submission.py``: every question id of the test questions
  file, EvalAI-processed answer, ``''`` where unanswered (EvalAI challenge 830).
* ``vizwiz_test``: ``scripts/convert_vizwiz_for_submission.py``: ``[{"image", "answer"}]`` for every test
  question, EvalAI-processed; an unanswered question is an error (the script asserts).
* ``gqa_testdev``: ``scripts/convert_gqa_for_eval.py``: ``[{"questionId", "prediction"}]``, converted.
* ``mmbench_xlsx``: ``scripts/convert_mmbench_for_submission.py``: the TSV minus hint, category, source,
  image, comment, l2-category, with ``prediction`` inserted as column 6 (0-based), saved as .xlsx.

Each returns a summary dict (counts and the path written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError, PredictionMismatchError
from qmamba.eval.io import write_json
from qmamba.eval.normalize import evalai_process
from qmamba.eval.tasks import gqa, mmbench, vizwiz, vqav2
from qmamba.eval.tasks.gqa import llava_convert
from qmamba.eval.tasks.matching import keyed_predictions, read_prediction_records

MMBENCH_DROPPED = ("hint", "category", "source", "image", "comment", "l2-category")
MMBENCH_PREDICTION_COLUMN = 6


def _answers(path: str | Path, id_field: str = "question_id", text_field: str = "text") -> dict[str, str]:
    """{str(question_id): text} from an answers JSONL (or official results with ``answer``)."""
    records = read_prediction_records(path)
    if text_field not in records[0] and "answer" in records[0]:
        text_field = "answer"
    return keyed_predictions(Path(path), records, id_field, text_field, 'answers JSONL {"question_id", "text"}')


def _summary(out: str | Path, n_questions: int, n_answered: int) -> dict[str, Any]:
    return {"path": str(out), "n_questions": n_questions, "n_answered": n_answered,
            "n_unanswered": n_questions - n_answered}


def _check_known(path: str | Path, preds: dict[str, str], known: set[str], questions: str | Path) -> None:
    unknown = [k for k in preds if k not in known]
    if unknown:
        raise PredictionMismatchError(f"{path}: {len(unknown)} answers for ids not in {questions}, e.g. {unknown[:5]}")


def vqav2_testdev(questions: str | Path, predictions: str | Path, out: str | Path) -> dict[str, Any]:
    """``questions``: llava_vqav2_mscoco_test2015.jsonl or the official test questions JSON."""
    items = vqav2.load_items(questions)
    preds = _answers(predictions)
    _check_known(predictions, preds, {str(it.question_id) for it in items}, questions)
    records = [{"question_id": it.question_id,
                "answer": evalai_process(preds[str(it.question_id)]) if str(it.question_id) in preds else ""}
               for it in items]
    write_json(out, records)
    n_answered = sum(str(it.question_id) in preds for it in items)
    return _summary(out, len(items), n_answered)


def vizwiz_test(questions: str | Path, predictions: str | Path, out: str | Path) -> dict[str, Any]:
    """``questions``: llava_test.jsonl or the official test.json (ids = image names)."""
    items = vizwiz.load_items(questions)
    preds = _answers(predictions)
    _check_known(predictions, preds, {str(it.question_id) for it in items}, questions)
    missing = [it.question_id for it in items if str(it.question_id) not in preds]
    if missing:
        raise PredictionMismatchError(f"{predictions}: no answer for {len(missing)} of {len(items)} test questions, "
                                      f"e.g. {missing[:5]}; the server needs every one: finish the run")
    records = [{"image": it.image, "answer": evalai_process(preds[str(it.question_id)])} for it in items]
    write_json(out, records)
    return _summary(out, len(items), len(items))


def gqa_testdev(predictions: str | Path, out: str | Path, questions: str | Path | None = None) -> dict[str, Any]:
    """Every answer line converted; with ``questions``, unknown ids raise and unanswered ones are counted."""
    preds = _answers(predictions)
    n_questions = None
    if questions is not None:
        ids = {str(it.question_id) for it in gqa.load_items(questions)}
        _check_known(predictions, preds, ids, questions)
        n_questions = len(ids)
    records = [{"questionId": qid, "prediction": llava_convert(text)} for qid, text in preds.items()]
    write_json(out, records)
    unanswered = None if n_questions is None else n_questions - len(preds)
    return {"path": str(out), "n_questions": n_questions, "n_answered": len(preds), "n_unanswered": unanswered}


def _mmbench_predictions(path: str | Path) -> dict[int, str]:
    records = read_prediction_records(path)
    if "prediction" in records[0]:
        return {mmbench.parse_index(r["index"], f"{path} row {i + 2}"): r["prediction"]
                for i, r in enumerate(records) if r.get("prediction", "") != ""}
    return {int(k): v for k, v in _answers(path).items()}


def mmbench_xlsx(questions: str | Path, predictions: str | Path, out: str | Path) -> dict[str, Any]:
    """``questions``: the MMBench TSV/XLSX the answers were made from; unanswered rows get an empty cell."""
    from qmamba.eval.xlsx import write_xlsx

    rows = mmbench.read_rows(questions)
    preds = _mmbench_predictions(predictions)
    _check_known(predictions, {str(k): v for k, v in preds.items()}, {str(r["index"]) for r in rows}, questions)
    columns = [c for c in rows[0] if c not in MMBENCH_DROPPED]
    if len(columns) < MMBENCH_PREDICTION_COLUMN:
        raise EvalFileError(f"{questions}: only {len(columns)} columns remain, cannot insert 'prediction' at 6")
    columns.insert(MMBENCH_PREDICTION_COLUMN, "prediction")
    out_rows = [{**{c: r.get(c) for c in columns}, "prediction": preds.get(r["index"])} for r in rows]
    write_xlsx(out, columns, out_rows)
    n_answered = sum(r["index"] in preds for r in rows)
    return _summary(out, len(rows), n_answered)
