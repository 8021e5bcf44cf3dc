"""GQA: its questions, its results file, and its accuracy: LLaVA's conversion then the GQA ``eval.py``
exact match (docs/scoring.md, section "GQA").

Questions: official ``testdev_balanced_questions.json`` or LLaVA ``llava_gqa_testdev_balanced.jsonl``.
LLaVA ``scripts/convert_gqa_for_eval.py`` turns each model output into ``text.rstrip('.').lower()``;
GQA ``eval.py`` then scores, over questions with ``isBalanced``, ``1.0 if prediction == answer else 0.0``
(no further normalisation), split into ``binary`` (types.structural != "query") and ``open`` (== "query").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError
from qmamba.eval.io import read_json_any, write_json
from qmamba.eval.tasks.common import SHORT_ANSWER_SUFFIX, EvalItem, TaskSpec, check_unique_ids, llava_items
from qmamba.eval.tasks.matching import MISSING, check_coverage, counts, keyed_predictions, only_file
from qmamba.eval.tasks.metrics import percent

# ------------------------------------------------------------------------------------------- questions
OFFICIAL_FORMAT = 'GQA questions JSON {"<questionId>": {"question", "imageId", "answer", "isBalanced", "types"}}'


def load_items(path: str | Path) -> list[EvalItem]:
    """Questions -> items; images ``<imageId>.jpg``; prompt = question + the short-answer suffix."""
    data = read_json_any(path)
    if isinstance(data, list):
        return check_unique_ids(path, llava_items(path, data))
    if not isinstance(data, dict):
        raise EvalFileError(f"{path}: expected the {OFFICIAL_FORMAT} or LLaVA JSONL")
    items = []
    for qid, q in data.items():
        if not isinstance(q, dict) or "question" not in q or "imageId" not in q:
            raise EvalFileError(f"{path}: entry {qid!r} lacks 'question' or 'imageId'; expected the {OFFICIAL_FORMAT}")
        meta = {"answer": q.get("answer"), "isBalanced": q.get("isBalanced"),
                "structural": q.get("types", {}).get("structural")}
        items.append(EvalItem(qid, f"{q['imageId']}.jpg", q["question"], q["question"] + SHORT_ANSWER_SUFFIX, meta))
    return items


def write_results(answers: list[dict[str, Any]], items: list[EvalItem], path: str | Path) -> Path:
    """``testdev_balanced_predictions.json``: ``[{"questionId", "prediction"}]`` after LLaVA's conversion."""
    records = [{"questionId": a["question_id"], "prediction": llava_convert(a["text"])} for a in answers]
    return write_json(path, records)


# --------------------------------------------------------------------------------------------- scoring
def llava_convert(text: str) -> str:
    """convert_gqa_for_eval.py: strip trailing periods, lower-case."""
    return text.rstrip(".").lower()


def score_gqa(
    questions: dict[str, dict[str, Any]], predictions: dict[str, str], skip_missing: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Questions (testdev_balanced_questions.json: str qid -> record) x {str qid: converted prediction}.

    Unbalanced questions are not scored. A balanced question without a prediction scores 0 (or is left
    out when ``skip_missing``). Metrics in percent, unrounded (eval.py prints ``%.2f``).
    """
    scores: dict[str, list[float]] = {"accuracy": [], "binary": [], "open": []}
    rows = []
    for qid, q in questions.items():
        if not q.get("isBalanced", False):
            continue
        pred = predictions.get(qid)
        if pred is None and skip_missing:
            continue
        score = 1.0 if pred == q["answer"] else 0.0
        kind = "open" if q["types"]["structural"] == "query" else "binary"
        scores["accuracy"].append(score)
        scores[kind].append(score)
        rows.append({
            "question_id": qid, "prediction": pred, "answer": q["answer"], "structural": q["types"]["structural"],
            "score": 100 * score, "missing": pred is None,
        })
    return {k: percent(v) for k, v in scores.items()}, rows


# -------------------------------------------------------------------------------------- official files
GQA_PREDS = 'GQA predictions [{"questionId", "prediction"}] or answers JSONL {"question_id", "text"}'


def score_files(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """testdev_balanced_questions.json x GQA predictions (answers JSONL converted as LLaVA does)."""
    path = only_file("gqa", anns, "testdev_balanced_questions.json")
    data = read_json_any(path)
    if not isinstance(data, dict) or not data:
        raise EvalFileError(f"{path}: expected the GQA questions JSON {{questionId: {{answer, isBalanced, types}}}}")
    for qid, q in data.items():
        if not isinstance(q, dict) or "answer" not in q or "structural" not in q.get("types", {}):
            raise EvalFileError(f"{path}: question {qid!r} lacks 'answer' or 'types.structural'")
    if "questionId" in records[0]:
        preds = keyed_predictions(pred_path, records, "questionId", "prediction", GQA_PREDS)
    else:
        raw = keyed_predictions(pred_path, records, "question_id", "text", GQA_PREDS)
        preds = {k: llava_convert(v) for k, v in raw.items()}
    expected = [qid for qid, q in data.items() if q.get("isBalanced", False)]
    missing = check_coverage(pred_path, preds, set(data), expected, str(path), opts["missing"])
    metrics, rows = score_gqa(data, preds, skip_missing=opts["missing"] == "skip")
    return metrics, rows, counts(len(expected), preds, missing, opts["missing"])


TASK = TaskSpec("gqa", load_items, write_results, results_filename="testdev_balanced_predictions.json",
                main_metric="accuracy", score_files=score_files, options={"missing": MISSING})
