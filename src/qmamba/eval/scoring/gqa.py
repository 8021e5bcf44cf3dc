"""GQA accuracy: LLaVA's conversion then the GQA ``eval.py`` exact match (spec section 3).

LLaVA ``scripts/convert_gqa_for_eval.py`` turns each model output into ``text.rstrip('.').lower()``;
GQA ``eval.py`` then scores, over questions with ``isBalanced``, ``1.0 if prediction == answer else 0.0``
(no further normalisation), split into ``binary`` (types.structural != "query") and ``open`` (== "query").
"""

from __future__ import annotations

from typing import Any

from qmamba.eval.scoring.common import percent


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
