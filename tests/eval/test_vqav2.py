"""VQAv2 official accuracy (vqaEval.py) and score_task end to end (docs/scoring.md, VQAv2)."""

from __future__ import annotations

import json

import pytest
from eval_utils import vqa_answers

from qmamba.eval import score_task
from qmamba.eval.errors import EmptyPredictionsError, EvalFileError, EvalOptionError, PredictionMismatchError
from qmamba.eval.tasks.vqav2 import question_accuracy


@pytest.mark.parametrize("pred, expected", [("yes", 1.0), ("Yes", 0.0), ("yes.", 0.0), (" yes\n", 1.0)])
def test_unanimous_gt_is_not_normalised(pred, expected):
    assert question_accuracy(pred, vqa_answers(*["yes"] * 10))[0] == expected


def test_unanimous_numbers_are_not_mapped():
    assert question_accuracy("two", vqa_answers(*["2"] * 10))[0] == 0.0


def test_disagreeing_gt_normalises_both_sides():
    acc, compared, gts = question_accuracy("Two.", vqa_answers(*["2"] * 9, "two"))
    assert (acc, compared, set(gts)) == (1.0, "2", {"2"})
    assert question_accuracy("the red", vqa_answers(*["red"] * 3, *["blue"] * 7))[0] == pytest.approx(0.9)


def test_others_are_the_dicts_that_differ():
    answers = vqa_answers("red", *["blue"] * 9)
    answers.insert(1, dict(answers[0]))  # the same dict twice (same answer_id): 11 entries
    answers.pop()  # back to 10: red, red(same id), 8 blue
    assert question_accuracy("red", answers)[0] == pytest.approx(16 / 30)


def _vqa_files(files, answers_by_qid, types):
    anns = [{"question_id": q, "image_id": 1, "question_type": qt, "answer_type": at, "multiple_choice_answer": "x",
             "answers": vqa_answers(*a)} for (q, a), (at, qt) in zip(answers_by_qid.items(), types)]
    return files.json("ann.json", {"annotations": anns})


@pytest.fixture
def vqa(files):
    gts = {1: ["yes"] * 10, 2: ["2"] + ["3"] * 9, 3: ["red"] * 5 + ["blue"] * 5}
    types = [("yes/no", "is the"), ("number", "how many"), ("other", "what color")]
    return _vqa_files(files, gts, types)


def test_end_to_end_official_format(vqa, files):
    preds = files.json("res.json", [{"question_id": 1, "answer": "Yes"}, {"question_id": 2, "answer": "2"},
                                    {"question_id": 3, "answer": "green"}])
    llava = score_task("vqav2", [vqa], preds, per_question=files.path("pq.jsonl"))
    official = score_task("vqav2", [vqa], preds, pipeline="official")
    # llava: "Yes" -> "yes" = 1.0; "2": m=1 -> 0.3; green 0  => 100*1.3/3 = 43.33
    assert llava["main"] == 43.33
    assert llava["metrics"]["per_answer_type"] == {"number": 30.0, "other": 0.0, "yes/no": 100.0}
    assert llava["metrics"]["per_question_type"]["how many"] == 30.0
    # official: "Yes" vs unanimous "yes" = 0 => 100*0.3/3 = 10.0
    assert official["main"] == 10.0
    rows = [json.loads(line) for line in files.path("pq.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows] == [100.0, 30.0, 0.0] and rows[0]["compared"] == "yes"


def test_oracle_llava_jsonl_scores_100(vqa, files):
    preds = files.jsonl("ans.jsonl", [{"question_id": q, "prompt": "p", "text": t}
                                      for q, t in ((1, "Yes."), (2, "three"), (3, "red"))])
    result = score_task("vqav2", vqa, preds)
    assert result["main"] == 100.0 and result["counts"]["n_missing"] == 0


def test_missing_answers_policies(vqa, files):
    preds = files.json("res.json", [{"question_id": 1, "answer": "yes"}])
    wrong = score_task("vqav2", [vqa], preds)
    assert wrong["main"] == 33.33 and wrong["counts"]["n_missing"] == 2 and not wrong["counts"]["complete"]
    assert score_task("vqav2", [vqa], preds, missing="skip")["main"] == 100.0
    with pytest.raises(PredictionMismatchError, match="no answer for 2 of 3"):
        score_task("vqav2", [vqa], preds, missing="error")


def test_malformed_inputs(vqa, files):
    with pytest.raises(PredictionMismatchError, match=r"not in .*ann.json, e.g. \['99'\]"):
        score_task("vqav2", [vqa], files.json("a.json", [{"question_id": 99, "answer": "x"}]))
    with pytest.raises(PredictionMismatchError, match="appears in records 0 and 1"):
        score_task("vqav2", [vqa], files.json("b.json", [{"question_id": 1, "answer": "x"}] * 2))
    with pytest.raises(EvalFileError, match="record 0 has no 'question_id'"):
        score_task("vqav2", [vqa], files.json("c.json", [{"image": "x.jpg", "answer": "x"}]))
    with pytest.raises(EmptyPredictionsError):
        score_task("vqav2", [vqa], files.jsonl("d.jsonl", []))
    with pytest.raises(EvalFileError, match="looks like a questions file"):
        questions = files.json("q.json", {"questions": []})
        score_task("vqav2", [questions], files.json("e.json", [{"question_id": 1, "answer": "x"}]))
    with pytest.raises(EvalFileError, match="neither one JSON document nor JSON lines"):
        score_task("vqav2", [vqa], _bad(files))
    strings = files.json("s.json", {"annotations": [{"question_id": 1, "answers": ["yes"] * 10, "answer_type": "a",
                                                     "question_type": "q"}]})
    with pytest.raises(EvalFileError, match=r'question_id 1 has answers of 10 items; expected .*\{"answer"'):
        score_task("vqav2", [strings], files.json("s2.json", [{"question_id": 1, "answer": "x"}]))
    with pytest.raises(EvalOptionError, match="pipeline='evalai' is not one of"):
        score_task("vqav2", [vqa], files.json("g.json", [{"question_id": 1, "answer": "x"}]), pipeline="evalai")
    with pytest.raises(EvalOptionError, match="takes no option"):
        score_task("vqav2", [vqa], files.json("h.json", [{"question_id": 1, "answer": "x"}]), extractor="x")


def _bad(files):
    path = files.path("bad.jsonl")
    path.write_text('{"question_id": 1, "text": "a"}\n{"question_id": 2, "text": \n')
    return path
