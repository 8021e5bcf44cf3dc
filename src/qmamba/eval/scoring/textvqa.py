"""TextVQA accuracy: LLaVA ``llava/eval/m4c_evaluator.py`` TextVQAAccuracyEvaluator (spec section 5).

All ten GT answers and the prediction go through EvalAIAnswerProcessor; the prediction scores the
leave-one-out accuracy of the matching processed GT answer, 0.0 when none matches. Matching predictions to
questions (``eval_textvqa.py``'s (image_id, question.lower()) key, or question ids) is done by the caller.
"""

from __future__ import annotations

from typing import Any

from qmamba.eval.normalize import evalai_process
from qmamba.eval.scoring.common import leave_one_out_accuracy

OCR_LINE = "Reference OCR token: "


def prompt_question(prompt: str) -> str | None:
    """eval_textvqa.py prompt_processor (the two cases of the spec): the question of a LLaVA prompt, lower-cased.

    3 lines containing "Reference OCR token: " -> line 0; 2 lines -> line 0; anything else -> None.
    """
    lines = prompt.split("\n")
    if OCR_LINE in prompt and len(lines) == 3:
        return lines[0].lower()
    if len(lines) == 2:
        return lines[0].lower()
    return None


def answer_accuracy(pred: str, answers: list[str]) -> float:
    """m4c: processed prediction vs the ten processed GT answers (10 are required; the caller checks)."""
    gts = [evalai_process(a) for a in answers]
    return leave_one_out_accuracy(evalai_process(pred), gts)


def score_textvqa(pairs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``pairs``: {"question_id", "prediction" (None = missing, scored 0), "answers"} -> (metrics, rows)."""
    accs, rows = [], []
    for p in pairs:
        acc = 0.0 if p["prediction"] is None else answer_accuracy(p["prediction"], p["answers"])
        accs.append(acc)
        compared = None if p["prediction"] is None else evalai_process(p["prediction"])
        rows.append({**p, "compared": compared, "score": 100 * acc, "missing": p["prediction"] is None})
    return {"accuracy": 100.0 * (sum(accs) / len(accs)) if accs else None}, rows  # eval_textvqa.py order

