"""TextVQA: LLaVA m4c evaluator and eval_textvqa.py matching (docs/scoring.md, TextVQA)."""

from __future__ import annotations

import pytest

from qmamba.eval import score_task
from qmamba.eval.errors import EvalFileError, PredictionMismatchError
from qmamba.eval.tasks.textvqa import answer_accuracy, prompt_question

SUFFIX = "\nAnswer the question using a single word or phrase."


@pytest.mark.parametrize("prompt, question", [
    ("What Brand?\nReference OCR token: coca, cola" + SUFFIX, "what brand?"),
    ("What Brand?" + SUFFIX, "what brand?"),
    ("What Brand?", None),
    ("What Brand?\nsomething\nelse", None),
])
def test_prompt_question(prompt, question):
    assert prompt_question(prompt) == question


def test_gt_and_prediction_both_go_through_evalai():
    answers = ["Coca-Cola"] * 3 + ["pepsi"] * 7
    assert answer_accuracy("coca cola", answers) == pytest.approx(0.9)
    assert answer_accuracy("Five", ["5"] * 10) == 1.0
    assert answer_accuracy("sprite", answers) == 0.0


ANNS = {"data": [
    {"question_id": 10, "image_id": "abc", "question": "What Brand?", "answers": ["Coca-Cola"] * 3 + ["pepsi"] * 7},
    {"question_id": 11, "image_id": "def", "question": "What number?", "answers": ["5"] * 10},
]}


def test_official_format_by_question_id(files):
    ann = files.json("val.json", ANNS)
    preds = files.json("res.json", [{"question_id": 10, "answer": "Coca-Cola"}, {"question_id": 11, "answer": "five"}])
    assert score_task("textvqa", [ann], preds)["main"] == pytest.approx(95.0)


def test_llava_answers_matched_by_image_id_and_prompt(files):
    ann = files.json("val.json", ANNS)
    preds = files.jsonl("ans.jsonl", [
        {"question_id": "abc", "prompt": "What brand?\nReference OCR token: coca" + SUFFIX, "text": "Coca Cola"},
        {"question_id": "def", "prompt": "what number?" + SUFFIX, "text": "5"},
    ])
    result = score_task("textvqa", [ann], preds)
    assert result["main"] == pytest.approx(95.0) and result["counts"]["n_missing"] == 0


def test_same_image_and_question_scores_against_the_last_annotation(files):
    ann = files.json("val.json", {"data": [
        {"question_id": 1, "image_id": "x", "question": "Q?", "answers": ["a"] * 10},
        {"question_id": 2, "image_id": "x", "question": "q?", "answers": ["b"] * 10}]})
    llava = files.jsonl("ans.jsonl", [{"question_id": "x", "prompt": "Q?" + SUFFIX, "text": "b"}] * 2)
    assert score_task("textvqa", [ann], llava)["main"] == 100.0  # both scored against the last one's "b"
    by_id = files.json("res.json", [{"question_id": 1, "answer": "b"}, {"question_id": 2, "answer": "b"}])
    assert score_task("textvqa", [ann], by_id)["main"] == 50.0


def test_missing_and_skip(files):
    ann = files.json("val.json", ANNS)
    preds = files.json("res.json", [{"question_id": 11, "answer": "5"}])
    assert score_task("textvqa", [ann], preds)["main"] == 50.0
    assert score_task("textvqa", [ann], preds, missing="skip")["main"] == 100.0  # LLaVA: mean over answers


def test_malformed(files):
    bad = files.json("bad.json", {"data": [{"question_id": 1, "image_id": "x", "question": "q", "answers": ["a"] * 9}]})
    with pytest.raises(EvalFileError, match="answers of 9 items; expected a list of 10 strings"):
        score_task("textvqa", [bad], files.json("r.json", [{"question_id": 1, "answer": "a"}]))
    ann = files.json("val.json", ANNS)
    with pytest.raises(PredictionMismatchError, match="needs a 'prompt'"):
        score_task("textvqa", [ann], files.json("r2.json", [{"question_id": "abc", "answer": "a"}]))
    with pytest.raises(PredictionMismatchError, match="no annotation with image_id 'zzz'"):
        preds = files.jsonl("r3.jsonl", [{"question_id": "zzz", "prompt": "q" + SUFFIX, "text": "a"}])
        score_task("textvqa", [ann], preds)
