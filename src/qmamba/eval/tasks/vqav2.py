"""VQAv2: its questions, its results file, and its accuracy as GT-Vision-Lab/VQA@a013f00 ``vqaEval.py``
computes it (docs/scoring.md, section "VQAv2").

Questions: official ``v2_OpenEnded_mscoco_*_questions.json`` or LLaVA ``llava_vqav2_*.jsonl``; the prompt is
the question and the short-answer suffix. Annotations: ``v2_mscoco_<split>_annotations.json``.
``pipeline='llava'`` (default) first passes each prediction through LLaVA's EvalAIAnswerProcessor, as
LLaVA's ``scripts/convert_vqav2_for_submission.py`` does before upload; ``'official'`` scores the
predictions as given. Results are in percent, rounded as vqaEval.py rounds (n=2, Python 2.7).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError
from qmamba.eval.io import read_json_any, require_fields, write_json
from qmamba.eval.normalize import clean_whitespace, evalai_process, normalize_answer
from qmamba.eval.tasks.common import SHORT_ANSWER_SUFFIX, EvalItem, TaskSpec, check_unique_ids, llava_items
from qmamba.eval.tasks.matching import MISSING, check_coverage, check_gt_answers, counts, keyed_predictions, only_file
from qmamba.eval.tasks.metrics import leave_one_out_accuracy, round_py2

# ------------------------------------------------------------------------------------------- questions
OFFICIAL_FORMAT = 'official questions JSON {"data_subtype", "questions": [{"image_id", "question", "question_id"}]}'


def image_name(data_subtype: str, image_id: int) -> str | None:
    """``COCO_<subtype>_<image_id:012d>.jpg``; test-dev images are the test2015 files (vqaEvalDemo.py, vqav2.sh)."""
    if not data_subtype:
        return None
    folder = "test2015" if data_subtype.startswith("test") else data_subtype
    return f"COCO_{folder}_{int(image_id):012d}.jpg"


def load_items(path: str | Path) -> list[EvalItem]:
    """Questions -> items with prompt = question + the short-answer suffix (LLaVA files: their text)."""
    data = read_json_any(path)
    if isinstance(data, list):
        return check_unique_ids(path, llava_items(path, data))
    if not isinstance(data, dict) or "questions" not in data:
        raise EvalFileError(f"{path}: no 'questions' list; expected the {OFFICIAL_FORMAT} or LLaVA JSONL")
    questions = data["questions"]
    require_fields(path, questions, ("image_id", "question", "question_id"), OFFICIAL_FORMAT)
    subtype = data.get("data_subtype", "")
    items = [
        EvalItem(q["question_id"], image_name(subtype, q["image_id"]), q["question"],
                 q["question"] + SHORT_ANSWER_SUFFIX, {"image_id": q["image_id"]})
        for q in questions
    ]
    return check_unique_ids(path, items)


def write_results(answers: list[dict[str, Any]], items: list[EvalItem], path: str | Path) -> Path:
    """The official results format ``[{"question_id", "answer"}]`` with the raw model answers.

    Score it with pipeline='llava' (EvalAI processing applied by the scorer); for the EvalAI upload use
    ``qmamba.eval.submission.vqav2_testdev`` (all test ids, processed answers).
    """
    return write_json(path, [{"question_id": a["question_id"], "answer": a["text"]} for a in answers])


# --------------------------------------------------------------------------------------------- scoring
PIPELINES = ("llava", "official")


def question_accuracy(pred: str, answers: list[dict[str, Any]]) -> tuple[float, str, list[str]]:
    """One question: (accuracy in [0, 1], the prediction as compared, the GT answers as compared).

    Whitespace is cleaned everywhere; punctuation/digit/article normalisation happens ONLY when the ten GT
    answers are not all identical (after whitespace cleaning), and then to GT and prediction alike.
    """
    gts = [clean_whitespace(a["answer"]) for a in answers]
    pred = clean_whitespace(pred)
    if len(set(gts)) > 1:
        gts = [normalize_answer(g) for g in gts]
        pred = normalize_answer(pred)
    # vqaEval.py's "others" are the answer dicts != this one; they differ by answer_id.
    keys = [json.dumps({**a, "answer": g}, sort_keys=True) for a, g in zip(answers, gts)]
    return leave_one_out_accuracy(pred, gts, keys), pred, gts


def _grouped(accs: dict[str, list[float]]) -> dict[str, float]:
    return {k: round_py2(100 * float(sum(v)) / len(v)) for k, v in sorted(accs.items())}


def score_vqav2(
    annotations: list[dict[str, Any]], predictions: dict[str, str], pipeline: str = "llava", skip_missing: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Annotations (the ``annotations`` list of v2_mscoco_*_annotations.json) x {str(question_id): answer}.

    A question without a prediction scores 0 (or is left out when ``skip_missing``).
    Returns (metrics, per-question rows); metrics: overall, per_answer_type, per_question_type.
    """
    accs: list[float] = []
    by_answer_type: dict[str, list[float]] = {}
    by_question_type: dict[str, list[float]] = {}
    rows = []
    for ann in annotations:
        qid = str(ann["question_id"])
        raw = predictions.get(qid)
        if raw is None and skip_missing:
            continue
        if raw is None:
            acc, compared, gts = 0.0, None, [a["answer"] for a in ann["answers"]]
        else:
            pred = evalai_process(raw) if pipeline == "llava" else raw
            acc, compared, gts = question_accuracy(pred, ann["answers"])
        accs.append(acc)
        by_answer_type.setdefault(ann["answer_type"], []).append(acc)
        by_question_type.setdefault(ann["question_type"], []).append(acc)
        rows.append({
            "question_id": ann["question_id"], "prediction": raw, "compared": compared, "answers": gts,
            "answer_type": ann["answer_type"], "question_type": ann["question_type"],
            "score": round_py2(100 * acc), "missing": raw is None,
        })
    metrics = {
        "overall": round_py2(100 * float(sum(accs)) / len(accs)) if accs else None,
        "per_answer_type": _grouped(by_answer_type),
        "per_question_type": _grouped(by_question_type),
    }
    return metrics, rows


# -------------------------------------------------------------------------------------- official files
VQA_PREDS = 'VQAv2 results [{"question_id", "answer"}] or answers JSONL {"question_id", "text"}'


def score_files(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """v2_mscoco_<split>_annotations.json x VQAv2 predictions."""
    path = only_file("vqav2", anns, "v2_mscoco_val2014_annotations.json")
    data = read_json_any(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        hint = " (it looks like a questions file)" if isinstance(data, dict) and "questions" in data else ""
        raise EvalFileError(f"{path}: no 'annotations' list{hint}; expected v2_mscoco_<split>_annotations.json")
    ann = data["annotations"]
    require_fields(path, ann, ("question_id", "answers", "answer_type", "question_type"), "VQAv2 annotations")
    check_gt_answers(path, ann, "question_id")
    text_field = "answer" if "answer" in records[0] else "text"
    preds = keyed_predictions(pred_path, records, "question_id", text_field, VQA_PREDS)
    expected = [str(a["question_id"]) for a in ann]
    missing = check_coverage(pred_path, preds, set(expected), expected, str(path), opts["missing"])
    metrics, rows = score_vqav2(ann, preds, opts["pipeline"], skip_missing=opts["missing"] == "skip")
    if questions is not None:
        text = {str(it.question_id): it.question for it in load_items(questions)}
        rows = [{**r, "question": text.get(str(r["question_id"]))} for r in rows]
    return metrics, rows, counts(len(expected), preds, missing, opts["missing"])


TASK = TaskSpec("vqav2", load_items, write_results, results_filename="results.json",
                main_metric="overall", score_files=score_files, options={"pipeline": PIPELINES, "missing": MISSING})
