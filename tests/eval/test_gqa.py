"""GQA: LLaVA conversion then exact match over balanced questions, binary/open (docs/scoring.md, GQA)."""

from __future__ import annotations

import pytest

from qmamba.eval import score_task
from qmamba.eval.errors import EvalFileError, PredictionMismatchError
from qmamba.eval.tasks.gqa import llava_convert


def _q(answer, structural, balanced=True):
    return {"question": "q?", "imageId": "n1", "answer": answer, "isBalanced": balanced,
            "types": {"structural": structural, "semantic": "obj", "detailed": "x"}}


QUESTIONS = {"1": _q("yes", "verify"), "2": _q("bedroom", "query"), "3": _q("t-shirt", "query"),
             "4": _q("no", "logical"), "5": _q("cat", "query", balanced=False)}


@pytest.mark.parametrize("text, converted", [
    ("Bedroom.", "bedroom"), ("St. Louis..", "st. louis"), ("T-Shirt", "t-shirt"),
])
def test_llava_conversion(text, converted):
    assert llava_convert(text) == converted


def test_llava_answers_converted_then_exact_match(files):
    ann = files.json("testdev_balanced_questions.json", QUESTIONS)
    preds = files.jsonl("ans.jsonl", [{"question_id": q, "prompt": "q?", "text": t}
                                      for q, t in (("1", "Yes."), ("2", "Bedroom"), ("3", "tshirt"), ("4", "yes"),
                                                   ("5", "dog"))])
    r = score_task("gqa", [ann], preds)
    # balanced: 1 right (binary), 2 right (open), 3 wrong (open), 4 wrong (binary); 5 is unbalanced: not scored
    assert r["metrics"] == {"accuracy": 50.0, "binary": 50.0, "open": 50.0}
    assert r["counts"]["n_questions"] == 4


def test_official_predictions_are_not_converted(files):
    ann = files.json("q.json", QUESTIONS)
    preds = files.json("p.json", [{"questionId": q, "prediction": t} for q, t in
                                  (("1", "Yes"), ("2", "bedroom"), ("3", "t-shirt"), ("4", "no"))])
    assert score_task("gqa", [ann], preds)["main"] == 75.0  # "Yes" != "yes": eval.py does no normalisation


def test_oracle_and_missing(files):
    ann = files.json("q.json", QUESTIONS)
    oracle = files.json("o.json", [{"questionId": q, "prediction": v["answer"]} for q, v in QUESTIONS.items()])
    assert score_task("gqa", [ann], oracle)["main"] == 100.0
    partial = files.json("p.json", [{"questionId": "2", "prediction": "bedroom"}])
    r = score_task("gqa", [ann], partial)
    assert r["main"] == 25.0 and r["counts"]["n_missing"] == 3


def test_malformed(files):
    ann = files.json("q.json", QUESTIONS)
    with pytest.raises(PredictionMismatchError, match="e.g. \\['99'\\]"):
        score_task("gqa", [ann], files.json("p.json", [{"questionId": "99", "prediction": "x"}]))
    with pytest.raises(EvalFileError, match="lacks 'answer' or 'types.structural'"):
        bad = files.json("bad.json", {"1": {"question": "q"}})
        score_task("gqa", [bad], files.json("p2.json", [{"questionId": "1", "prediction": "x"}]))
    with pytest.raises(EvalFileError, match="record 0 field 'text' is None"):
        score_task("gqa", [ann], files.jsonl("p3.jsonl", [{"question_id": "1", "text": None}]))
