"""VizWiz-VQA accuracy and unanswerability as the VizWiz VQAEval computes them (spec section 4).

Only the prediction is normalised (punctuation, digits/articles, VizWiz's U+2019 contractions); the ten GT
answers are compared exactly as stored. ``pipeline='llava'`` (default) first applies EvalAIAnswerProcessor,
as LLaVA's ``scripts/convert_vizwiz_for_submission.py`` does before upload. Unanswerability: average
precision and F1 of "unanswerable" (sklearn average_precision_score / f1_score, reimplemented in common.py).
Rounding: ``round(100 * x, 2)`` with Python 3's round (the evaluator is Python 3 code).
"""

from __future__ import annotations

from typing import Any

from qmamba.eval.normalize import VIZWIZ_CONTRACTIONS, clean_whitespace, evalai_process, normalize_answer
from qmamba.eval.scoring.common import average_precision, f1_binary, leave_one_out_accuracy, percent

PIPELINES = ("llava", "official")


def normalize_prediction(raw: str, pipeline: str = "llava") -> str:
    """The prediction as VQAEval compares it (after LLaVA's EvalAI processing when pipeline='llava')."""
    text = evalai_process(raw) if pipeline == "llava" else raw
    return normalize_answer(clean_whitespace(text), VIZWIZ_CONTRACTIONS)


def _r2(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def score_vizwiz(
    annotations: list[dict[str, Any]], predictions: dict[str, str], pipeline: str = "llava", skip_missing: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Annotations (val.json records with answers and answerable) x {image: answer}.

    A missing prediction scores 0 and counts as "answerable" for AP/F1 (or is left out when
    ``skip_missing``). Returns (metrics, rows); metrics: overall, per_answer_type, average_precision, f1.
    """
    accs, gt_unans, pred_unans, rows = [], [], [], []
    by_type: dict[str, list[float]] = {}
    for ann in annotations:
        raw = predictions.get(ann["image"])
        if raw is None and skip_missing:
            continue
        gts = [a["answer"] for a in ann["answers"]]
        compared = None if raw is None else normalize_prediction(raw, pipeline)
        acc = 0.0 if compared is None else leave_one_out_accuracy(compared, gts)
        accs.append(acc)
        by_type.setdefault(ann.get("answer_type", "unknown"), []).append(acc)
        gt_unans.append(1 - int(ann["answerable"]))
        pred_unans.append(1 - int(compared != "unanswerable"))
        rows.append({
            "question_id": ann["image"], "prediction": raw, "compared": compared, "answers": gts,
            "answer_type": ann.get("answer_type"), "answerable": ann["answerable"],
            "score": round(100 * acc, 2), "missing": raw is None,
        })
    metrics = {
        "overall": round(percent(accs), 2) if accs else None,  # round(100 * sum / len, 2) as VQAEval
        "per_answer_type": {k: round(percent(v), 2) for k, v in sorted(by_type.items())},
        "unanswerable_average_precision": _r2(average_precision(gt_unans, pred_unans)) if accs else None,
        "unanswerable_f1": _r2(f1_binary(gt_unans, [p > 0.5 for p in pred_unans])) if accs else None,
    }
    return metrics, rows
