"""POPE yes/no parsing and metrics as RUCAIBox/POPE ``evaluate.py`` == LLaVA ``llava/eval/eval_pope.py`` (spec 6).

Parsing is case-sensitive, as the original: only the words ``No``, ``no`` and ``not`` (after keeping the
text before the first '.', deleting ',' and splitting on single spaces) make a "no"; "NO", "Not", "No!",
"no;" and "no\\n" all parse as "yes". Labels: "no" -> negative, anything else -> positive.
Metrics here are in percent (the scripts print fractions with %.3f); where the scripts would divide by
zero the value is None.
"""

from __future__ import annotations

from typing import Any

SPLITS = ("random", "popular", "adversarial")


def parse_pope_answer(text: str) -> str:
    """evaluate.py: first sentence, commas deleted, split(' '); 'No'/'not'/'no' among the words -> 'no'."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _ratio(num: int, den: int) -> float | None:
    return 100 * num / den if den else None


def pope_metrics(preds: list[str], labels: list[str]) -> dict[str, Any]:
    """Parsed 'yes'/'no' predictions x labels (positive = yes) -> accuracy, precision, recall, F1, yes-ratio."""
    pos_pred = [p != "no" for p in preds]
    pos_true = [lab != "no" for lab in labels]
    tp = sum(p and t for p, t in zip(pos_pred, pos_true))
    fp = sum(p and not t for p, t in zip(pos_pred, pos_true))
    tn = sum(not p and not t for p, t in zip(pos_pred, pos_true))
    fn = sum(not p and t for p, t in zip(pos_pred, pos_true))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = None
    if precision is not None and recall is not None and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "accuracy": _ratio(tp + tn, len(preds)), "precision": precision, "recall": recall, "f1": f1,
        "yes_ratio": _ratio(sum(pos_pred), len(preds)), "n": len(preds), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }


def _mean(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def score_pope(matched: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``matched``: split -> [{"question_id", "prediction" (raw text), "label"}] in label-file order.

    Metrics: per split, ``overall`` (all splits pooled) and the means of the per-split F1 and accuracy
    (how papers combine the splits is not documented; the report uses ``f1_mean_of_splits``).
    """
    per_split, rows, all_preds, all_labels = {}, [], [], []
    for split, pairs in matched.items():
        preds = [parse_pope_answer(p["prediction"]) for p in pairs]
        labels = [p["label"] for p in pairs]
        per_split[split] = pope_metrics(preds, labels)
        all_preds += preds
        all_labels += labels
        for p, parsed in zip(pairs, preds):
            correct = (parsed == "no") == (p["label"] == "no")
            rows.append({**p, "split": split, "parsed": parsed, "score": 100.0 * correct})
    metrics = {
        "per_split": per_split,
        "overall": pope_metrics(all_preds, all_labels),
        "f1_mean_of_splits": _mean([m["f1"] for m in per_split.values()]),
        "accuracy_mean_of_splits": _mean([m["accuracy"] for m in per_split.values()]),
    }
    return metrics, rows
