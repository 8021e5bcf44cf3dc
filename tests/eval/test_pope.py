"""POPE: case-sensitive parsing, metrics, split assignment and label matching (docs/scoring.md, POPE)."""

from __future__ import annotations

import pytest

from qmamba.eval import TASKS, answer_record, score_task
from qmamba.eval.errors import EvalFileError, EvalOptionError, PredictionMismatchError
from qmamba.eval.tasks.pope import parse_pope_answer, pope_metrics


@pytest.mark.parametrize("text, parsed", [
    ("No", "no"), ("no", "no"), ("No.", "no"), ("No, there is not.", "no"), ("There is not a dog.", "no"),
    ("Yes, there is no dog", "no"), ("no  dog", "no"),
    ("NO", "yes"), ("Not", "yes"), ("No!", "yes"), ("no;", "yes"), ("no\n", "yes"),  # case/punctuation: yes
    ("Yes. No", "yes"),            # only the first sentence counts
    ("I cannot tell", "yes"),      # "cannot" is not the word "not"
    ("", "yes"),
])
def test_parse_pope_answer(text, parsed):
    assert parse_pope_answer(text) == parsed


def test_metrics_always_yes():
    m = pope_metrics(["yes"] * 5, ["yes", "yes", "no", "no", "no"])
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 3, 0, 0)
    assert m["accuracy"] == pytest.approx(40.0) and m["precision"] == pytest.approx(40.0)
    assert m["recall"] == pytest.approx(100.0) and m["yes_ratio"] == pytest.approx(100.0)
    assert m["f1"] == pytest.approx(100 * 2 * 0.4 / 1.4)


def test_metrics_undefined_values_are_none_and_labels_other_than_no_are_positive():
    m = pope_metrics(["no", "no"], ["no", "no"])
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None and m["accuracy"] == 100.0
    assert pope_metrics(["yes"], ["No"])["tp"] == 1  # eval_pope.py: only the label "no" is negative


RANDOM = ["yes", "no", "yes", "no"]
ADVERSARIAL = ["yes", "no", "no"]


def _label_files(files):
    def recs(labels):
        return [{"question_id": i + 1, "image": f"COCO_val2014_{i:012d}.jpg", "text": f"Is there a thing {i}?",
                 "label": lab} for i, lab in enumerate(labels)]
    return [files.jsonl("coco_pope_random.json", recs(RANDOM)),
            files.jsonl("coco_pope_adversarial.json", recs(ADVERSARIAL))]


def _check_always_yes(m):
    assert m["per_split"]["random"]["accuracy"] == pytest.approx(50.0)
    assert m["per_split"]["random"]["f1"] == pytest.approx(200 / 3)
    assert m["per_split"]["adversarial"]["precision"] == pytest.approx(100 / 3)
    assert m["per_split"]["adversarial"]["f1"] == pytest.approx(50.0)
    assert m["overall"]["accuracy"] == pytest.approx(300 / 7) and m["overall"]["f1"] == pytest.approx(60.0)
    assert m["f1_mean_of_splits"] == pytest.approx((200 / 3 + 50) / 2)


def test_always_yes_with_qmamba_ids(files):
    labels = _label_files(files)
    items = TASKS["pope"].load_items(labels)
    assert items[0].question_id == "random:1" and items[4].question_id == "adversarial:1"
    assert items[0].prompt == "Is there a thing 0?\nAnswer the question using a single word or phrase."
    preds = files.jsonl("ans.jsonl", [answer_record(it, "Yes, there is.") for it in reversed(items)])
    result = score_task("pope", labels, preds)
    _check_always_yes(result["metrics"])
    assert result["counts"] == {**result["counts"], "n_questions": 7, "n_missing": 0}


def test_always_yes_llava_ids_by_position_with_questions_file(files):
    labels = _label_files(files)
    qs = [{"image": "x.jpg", "text": f"Is there a thing {i}?\nAnswer...", "category": c}
          for c, labs in (("random", RANDOM), ("adversarial", ADVERSARIAL)) for i, _ in enumerate(labs)]
    qs = [{"question_id": 20000000 + n, **q} for n, q in enumerate(qs)]  # LLaVA-style ids, unique over splits
    questions = files.jsonl("llava_pope_test.jsonl", qs)
    preds = files.jsonl("ans.jsonl", [{"question_id": q["question_id"], "prompt": q["text"], "text": "yes"}
                                      for q in qs])
    _check_always_yes(score_task("pope", labels, preds, questions=questions)["metrics"])
    shuffled = files.jsonl("shuf.jsonl", [{"question_id": q["question_id"], "prompt": q["text"], "text": "yes"}
                                          for q in qs[1::-1] + qs[2:]])
    with pytest.raises(PredictionMismatchError, match="must follow label-file order"):
        score_task("pope", labels, shuffled, questions=questions)


def test_single_split_official_ids(files):
    labels = _label_files(files)[:1]
    texts = ["Yes", "No", "NO", "no"]
    preds = files.jsonl("ans.jsonl", [{"question_id": i + 1, "text": t} for i, t in enumerate(texts)])
    m = score_task("pope", labels, preds)["metrics"]["per_split"]["random"]
    # parsed yes, no, yes, no vs yes, no, yes, no -> all right
    assert m["accuracy"] == 100.0 and m["yes_ratio"] == 50.0


def test_missing_answers(files):
    labels = _label_files(files)
    preds = files.jsonl("ans.jsonl", [{"question_id": "random:1", "text": "yes"},
                                      {"question_id": "random:2", "text": "no"}])
    with pytest.raises(PredictionMismatchError, match="no answer for 5 of 5"):
        score_task("pope", labels, preds)
    r = score_task("pope", labels, preds, missing="skip")
    assert r["counts"]["n_missing"] == 5 and list(r["metrics"]["per_split"]) == ["random"]
    assert r["metrics"]["overall"]["accuracy"] == 100.0
    with pytest.raises(EvalOptionError, match="missing='wrong' is not one of"):
        score_task("pope", labels, preds, missing="wrong")


def test_malformed(files):
    labels = _label_files(files)
    unsplit = files.jsonl("labels.json", [{"question_id": 1, "image": "a", "text": "t", "label": "yes"}])
    with pytest.raises(EvalFileError, match="names no split"):
        score_task("pope", [unsplit], files.jsonl("a.jsonl", [{"question_id": 1, "text": "yes"}]))
    with pytest.raises(PredictionMismatchError, match="no label file for it"):
        score_task("pope", labels, files.jsonl("b.jsonl", [{"question_id": "popular:1", "text": "yes"}]))
    with pytest.raises(EvalFileError, match="names no split"):
        score_task("pope", labels, files.jsonl("c.jsonl", [{"question_id": 1, "text": "yes"}]))
    with pytest.raises(PredictionMismatchError, match="got 1 answers for 4 labels"):
        score_task("pope", labels[:1], files.jsonl("d.jsonl", [{"question_id": 77, "text": "yes"}]))
