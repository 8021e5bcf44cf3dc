"""VizWiz: only predictions normalised, U+2019 contractions, unanswerable AP/F1 (docs/scoring.md, VizWiz-VQA)."""

from __future__ import annotations

import pytest

from qmamba.eval import score_task
from qmamba.eval.errors import EvalFileError
from qmamba.eval.tasks.vizwiz import normalize_prediction, score_vizwiz


def _ann(image, answers, answerable, answer_type):
    return {"image": image, "question": "q?", "answers": [{"answer": a, "answer_confidence": "yes"} for a in answers],
            "answerable": answerable, "answer_type": answer_type}


ANNS = [
    _ann("VizWiz_val_0.jpg", ["unanswerable"] * 10, 0, "unanswerable"),
    _ann("VizWiz_val_1.jpg", ["yes"] * 10, 1, "yes/no"),
    _ann("VizWiz_val_2.jpg", ["red"] * 3 + ["blue"] * 7, 1, "other"),
    _ann("VizWiz_val_3.jpg", ["two"] * 10, 1, "number"),
]


@pytest.mark.parametrize("gt, pred, acc", [
    ("two", "two", 0.0),                       # GT is not normalised: "two" never matches ("two" -> "2")
    ("the coca cola", "the coca cola", 0.0),   # nor are its articles
    ("coca cola", "The Coca-Cola.", 100.0),    # the prediction is
    ("don\u2019t", "dont", 100.0),             # VizWiz contractions use U+2019
    ("don't", "dont", 0.0),
    ("can't", "cant", 100.0),                  # ... except a few ASCII ones
])
def test_only_prediction_is_normalised(gt, pred, acc):
    metrics, _ = score_vizwiz([_ann("a.jpg", [gt] * 10, 1, "other")], {"a.jpg": pred}, pipeline="official")
    assert metrics["overall"] == acc


def test_normalize_prediction_pipelines():
    assert normalize_prediction("Unanswerable.", "official") == "unanswerable"
    assert normalize_prediction("red,white", "official") == "red white"
    assert normalize_prediction("red,white", "llava") == "redwhite"  # EvalAI deletes commas first


def test_end_to_end_accuracy_and_unanswerability(files):
    ann = files.json("val.json", ANNS)
    preds = files.json("res.json", [{"image": "VizWiz_val_0.jpg", "answer": "Unanswerable"},
                                    {"image": "VizWiz_val_1.jpg", "answer": "unanswerable"},
                                    {"image": "VizWiz_val_2.jpg", "answer": "red"},
                                    {"image": "VizWiz_val_3.jpg", "answer": "two"}])
    m = score_task("vizwiz", [ann], preds)["metrics"]
    # accuracies 1, 0, 0.9, 0 -> 47.5; unanswerable truth [1,0,0,0], predicted [1,1,0,0]
    assert m["overall"] == 47.5
    assert m["per_answer_type"] == {"number": 0.0, "other": 90.0, "unanswerable": 100.0, "yes/no": 0.0}
    assert m["unanswerable_average_precision"] == 50.0   # one threshold: recall 1, precision 1/2
    assert m["unanswerable_f1"] == 66.67                 # tp 1, fp 1, fn 0 -> 2/3


def test_llava_jsonl_mapped_through_questions_and_missing(files):
    ann = files.json("val.json", ANNS)
    questions = files.jsonl("llava_val.jsonl", [{"question_id": i, "image": a["image"], "text": "q?"}
                                                for i, a in enumerate(ANNS)])
    preds = files.jsonl("ans.jsonl", [{"question_id": 0, "prompt": "q?", "text": "unanswerable"},
                                      {"question_id": 1, "prompt": "q?", "text": "Yes"}])
    r = score_task("vizwiz", [ann], preds, questions=questions)
    # 1 + 1 + 0 (missing) + 0 (missing) -> 50; missing counted as answerable: AP = 1 (tp 1 at threshold 1)
    assert r["main"] == 50.0 and r["counts"]["n_missing"] == 2
    assert r["metrics"]["unanswerable_average_precision"] == 100.0
    assert score_task("vizwiz", [ann], preds, questions=questions, missing="skip")["main"] == 100.0
    with pytest.raises(EvalFileError, match="pass the questions file"):
        score_task("vizwiz", [ann], preds)


def test_oracle_scores_100_when_gt_is_already_normal(files):
    ann = files.json("val.json", ANNS[:3])
    preds = files.json("res.json", [{"image": a["image"], "answer": a["answers"][-1]["answer"]} for a in ANNS[:3]])
    assert score_task("vizwiz", [ann], preds)["main"] == 100.0


def test_test_split_without_answers_is_refused(files):
    test = files.json("test.json", [{"image": "VizWiz_test_0.jpg", "question": "q?"}])
    with pytest.raises(EvalFileError, match="test answers are hidden"):
        score_task("vizwiz", [test], files.json("r.json", [{"image": "VizWiz_test_0.jpg", "answer": "x"}]))
