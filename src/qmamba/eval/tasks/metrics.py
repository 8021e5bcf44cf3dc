"""Arithmetic shared by the scorers: the 10-way VQA accuracy, Python-2 rounding, AP and F1.

Implemented from the rules in docs/scoring.md; each function names the official script it mirrors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from decimal import ROUND_HALF_UP, Decimal


def leave_one_out_accuracy(pred: str, answers: Sequence[str], keys: Sequence[Hashable] | None = None) -> float:
    """Mean over the GT answers g of ``min(1, #{others == pred} / 3)`` (vqaEval.py, VizWiz, m4c_evaluator.py).

    ``keys`` identify the GT entries for "others": vqaEval.py drops every dict equal to g (dicts differ by
    answer_id), VizWiz and m4c drop by position (the default). With m matches the result is
    0, 0.3, 0.6, 0.9, 1.0 for m = 0, 1, 2, 3, >=4 (when the keys are distinct).
    """
    keys = list(range(len(answers))) if keys is None else list(keys)
    m = sum(a == pred for a in answers)
    multiplicity = Counter(keys)  # an entry equal to g is not among g's "others"
    accs = [min(1, (m - multiplicity[k] if a == pred else m) / 3) for a, k in zip(answers, keys)]
    return sum(accs) / len(accs)


def round_py2(x: float, ndigits: int = 2) -> float:
    """Python 2.7 ``round``: correctly rounded from the float's exact value, exact ties away from zero.

    vqaEval.py runs under Python 2.7 (its README); Python 3's ``round`` sends exact ties to even instead
    (``round(0.125, 2)`` is 0.13 under 2.7 and 0.12 under 3).
    """
    quantum = Decimal(1).scaleb(-ndigits)
    return float(Decimal(x).quantize(quantum, rounding=ROUND_HALF_UP))


def percent(values: Sequence[float]) -> float | None:
    """``100 * sum / len`` in that order (as the official scripts compute it); None when empty."""
    return 100 * float(sum(values)) / len(values) if values else None


def average_precision(y_true: Sequence[int], scores: Sequence[float]) -> float:
    """sklearn ``average_precision_score`` for binary labels: sum over thresholds of (R_k - R_{k-1}) * P_k.

    Thresholds are the distinct scores, high to low; P_k, R_k the precision and recall when everything
    scoring >= the k-th threshold is called positive. No positive labels: 0.0 (sklearn >= 1.1 returns 0
    with a warning there).
    """
    n_pos = sum(1 for y in y_true if y)
    if n_pos == 0:
        return 0.0
    by_score: dict[float, list[int]] = {}
    for y, s in zip(y_true, scores):
        by_score.setdefault(s, [0, 0])[0 if y else 1] += 1  # [positives, negatives] at this score
    tp = fp = 0
    ap = prev_recall = 0.0
    for s in sorted(by_score, reverse=True):
        tp += by_score[s][0]
        fp += by_score[s][1]
        recall = tp / n_pos
        ap += (recall - prev_recall) * (tp / (tp + fp))
        prev_recall = recall
    return ap


def f1_binary(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """sklearn ``f1_score`` (binary, pos_label=1): 2TP / (2TP + FP + FN); 0.0 when that is 0/0."""
    tp = sum(1 for t, p in zip(y_true, y_pred) if t and p)
    fp = sum(1 for t, p in zip(y_true, y_pred) if not t and p)
    fn = sum(1 for t, p in zip(y_true, y_pred) if t and not p)
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else 0.0
