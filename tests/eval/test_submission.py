"""Server upload files, as LLaVA's convert_*_for_submission.py scripts make them."""

from __future__ import annotations

import json

import pytest

from qmamba.eval.errors import PredictionMismatchError
from qmamba.eval.io import write_tsv
from qmamba.eval.submission import gqa_testdev, mmbench_xlsx, vizwiz_test, vqav2_testdev
from qmamba.eval.xlsx import read_xlsx


def test_vqav2_all_ids_processed_and_blank(files):
    qs = files.jsonl("llava_vqav2_mscoco_test2015.jsonl",
                     [{"question_id": i, "image": f"{i}.jpg", "text": "q?\nAnswer..."} for i in (1, 2, 3)])
    preds = files.jsonl("ans.jsonl", [{"question_id": 1, "text": "Two,"}, {"question_id": 2, "text": "Man's hat"}])
    summary = vqav2_testdev(qs, preds, files.path("up.json"))
    assert json.loads(files.path("up.json").read_text()) == [
        {"question_id": 1, "answer": "2"}, {"question_id": 2, "answer": "man 's hat"}, {"question_id": 3, "answer": ""}]
    assert summary["n_unanswered"] == 1
    with pytest.raises(PredictionMismatchError, match="answers for ids not in"):
        vqav2_testdev(qs, files.jsonl("x.jsonl", [{"question_id": 9, "text": "a"}]), files.path("u2.json"))


def test_vizwiz_needs_every_answer(files):
    qs = files.jsonl("llava_test.jsonl", [{"question_id": i, "image": f"VizWiz_test_{i}.jpg", "text": "q"}
                                          for i in (0, 1)])
    preds = files.jsonl("ans.jsonl", [{"question_id": 0, "text": "Unanswerable."}, {"question_id": 1, "text": "A dog"}])
    vizwiz_test(qs, preds, files.path("up.json"))
    assert json.loads(files.path("up.json").read_text()) == [
        {"image": "VizWiz_test_0.jpg", "answer": "unanswerable"}, {"image": "VizWiz_test_1.jpg", "answer": "dog"}]
    with pytest.raises(PredictionMismatchError, match="no answer for 1 of 2"):
        vizwiz_test(qs, files.jsonl("p.jsonl", [{"question_id": 0, "text": "x"}]), files.path("u.json"))


def test_gqa_converted(files):
    preds = files.jsonl("ans.jsonl", [{"question_id": "20", "text": "Bedroom."}])
    summary = gqa_testdev(preds, files.path("p.json"))
    assert json.loads(files.path("p.json").read_text()) == [{"questionId": "20", "prediction": "bedroom"}]
    assert summary["n_answered"] == 1 and summary["n_questions"] is None


def test_mmbench_columns_as_llava(tmp_path, files):
    columns = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
               "l2-category", "comment", "split"]
    rows = [{c: f"{c}{i}" for c in columns} | {"index": i} for i in (1, 1000001)]
    write_tsv(tmp_path / "dev.tsv", rows, columns)
    preds = files.jsonl("ans.jsonl", [{"question_id": 1, "text": "B <&> \"x\"\n"}])
    summary = mmbench_xlsx(tmp_path / "dev.tsv", preds, tmp_path / "up.xlsx")
    back = read_xlsx(tmp_path / "up.xlsx")
    assert list(back[0]) == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert back[0]["prediction"] == "B <&> \"x\"\n" and back[1]["prediction"] == ""
    assert back[1]["index"] == "1000001" and back[1]["answer"] == "answer1000001"
    assert summary["n_unanswered"] == 1
