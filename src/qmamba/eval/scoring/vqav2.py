"""VQAv2 accuracy as GT-Vision-Lab/VQA@a013f00 ``vqaEval.py`` computes it (spec section 2.2).

``pipeline='llava'`` (default) first passes each prediction through LLaVA's EvalAIAnswerProcessor, as
LLaVA's ``scripts/convert_vqav2_for_submission.py`` does before upload (spec 2.3); ``'official'`` scores
the predictions as given. Results are in percent, rounded as vqaEval.py rounds (n=2, Python 2.7).
"""

from __future__ import annotations

import json
from typing import Any

from qmamba.eval.normalize import clean_whitespace, evalai_process, normalize_answer
from qmamba.eval.scoring.common import leave_one_out_accuracy, round_py2

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
