"""Question loaders, LLaVA-1.5 prompts, results writers, and a model-free run: items -> answers -> score."""

from __future__ import annotations

import json

import pytest
from eval_utils import vqa_answers

from qmamba.eval import TASKS, answer_record, score_task
from qmamba.eval.errors import EvalFileError
from qmamba.eval.tasks.textvqa import prompt_question

SHORT = "\nAnswer the question using a single word or phrase."
VIZWIZ = "\nWhen the provided information is insufficient, respond with 'Unanswerable'." + SHORT


def test_vqav2_official_and_llava_questions(files):
    q = {"image_id": 262144, "question": "Is the ball flying towards the batter?", "question_id": 262144000}
    testdev = files.json("q.json", {"data_subtype": "test-dev2015", "questions": [q]})
    item = TASKS["vqav2"].load_items(testdev)[0]
    assert item.image == "COCO_test2015_000000262144.jpg" and item.prompt == q["question"] + SHORT
    val = files.json("v.json", {"data_subtype": "val2014", "questions": [q]})
    assert TASKS["vqav2"].load_items(val)[0].image == "COCO_val2014_000000262144.jpg"
    llava = files.jsonl("l.jsonl", [{"question_id": 262144000, "image": "COCO_test2015_000000262144.jpg",
                                     "text": q["question"] + SHORT, "category": "default"}])
    item = TASKS["vqav2"].load_items(llava)[0]
    assert (item.prompt, item.question, item.meta) == (q["question"] + SHORT, q["question"], {"category": "default"})


def test_gqa_and_vizwiz_prompts(files):
    gqa = files.json("g.json", {"20644644": {"question": "Which room is it?", "imageId": "n250821", "answer": "bedroom",
                                             "isBalanced": True, "types": {"structural": "query"}}})
    item = TASKS["gqa"].load_items(gqa)[0]
    assert (item.question_id, item.image, item.prompt) == ("20644644", "n250821.jpg", "Which room is it?" + SHORT)
    viz = files.json("val.json", [{"image": "VizWiz_val_00000000.jpg", "question": "What is this?"}])
    item = TASKS["vizwiz"].load_items(viz)[0]
    assert (item.question_id, item.prompt) == ("VizWiz_val_00000000.jpg", "What is this?" + VIZWIZ)


def test_textvqa_ocr_line(files):
    data = {"data": [{"question_id": 1, "image_id": "abc", "question": "What brand?", "answers": ["x"] * 10,
                      "ocr_tokens": ["dakota", "digital"]},
                     {"question_id": 2, "image_id": "def", "question": "What number?", "answers": ["5"] * 10}]}
    path = files.json("val.json", data)
    with_ocr, without = TASKS["textvqa"].load_items(path)
    assert with_ocr.prompt == "What brand?\nReference OCR token: dakota, digital" + SHORT
    assert without.prompt == "What number?" + SHORT and without.image == "def.jpg"
    assert prompt_question(with_ocr.prompt) == prompt_question(without.prompt.replace("number", "brand"))
    rosetta = files.json("ocr.json", {"data": [{"image_id": "def", "ocr_tokens": ["5"]}]})
    item = TASKS["textvqa"].load_items(path, ocr_file=rosetta)[1]
    assert item.prompt == "What number?\nReference OCR token: 5" + SHORT
    assert TASKS["textvqa"].load_items(path, use_ocr=False)[0].prompt == "What brand?" + SHORT


def test_loader_errors(files):
    with pytest.raises(EvalFileError, match="no 'questions' list"):
        TASKS["vqav2"].load_items(files.json("a.json", {"annotations": []}))
    with pytest.raises(EvalFileError, match="question_id 1 occurs twice"):
        TASKS["vqav2"].load_items(files.jsonl("b.jsonl", [{"question_id": 1, "text": "q"}] * 2))
    with pytest.raises(EvalFileError, match="record 0 has no 'question'"):
        TASKS["vizwiz"].load_items(files.json("c.json", [{"image": "x.jpg"}]))


def _oracle_run(task, items, answer_of, out):
    """What the runner does after generation: answers JSONL + the official results file."""
    answers = [answer_record(it, answer_of(it), "oracle") for it in items]
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / "predictions.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    return TASKS[task].write_results(answers, items, out)


def test_model_free_runs_score_100_from_both_files(files, tmp_path):
    qs = {"data_subtype": "val2014", "questions": [{"image_id": 1, "question": "How many?", "question_id": 5}]}
    ann = {"annotations": [{"question_id": 5, "image_id": 1, "question_type": "how many", "answer_type": "number",
                            "answers": vqa_answers(*["2"] * 9, "two")}]}
    q_path, a_path = files.json("q.json", qs), files.json("a.json", ann)
    items = TASKS["vqav2"].load_items(q_path)
    results = _oracle_run("vqav2", items, lambda it: "Two", tmp_path / "vqav2" / "results.json")
    assert json.loads(results.read_text()) == [{"question_id": 5, "answer": "Two"}]
    assert score_task("vqav2", [a_path], results)["main"] == 100.0
    assert score_task("vqav2", [a_path], tmp_path / "vqav2" / "predictions.jsonl")["main"] == 100.0


def test_model_free_textvqa_gqa_vizwiz(files, tmp_path):
    tv = files.json("tv.json", {"data": [{"question_id": 1, "image_id": "abc", "question": "What brand?",
                                          "answers": ["Coca-Cola"] * 10, "ocr_tokens": ["coca"]}]})
    items = TASKS["textvqa"].load_items(tv)
    res = _oracle_run("textvqa", items, lambda it: "coca cola", tmp_path / "tv" / "results.json")
    assert score_task("textvqa", [tv], res)["main"] == 100.0
    gq = files.json("gq.json", {"7": {"question": "Is it red?", "imageId": "n1", "answer": "yes", "isBalanced": True,
                                      "types": {"structural": "verify"}}})
    res = _oracle_run("gqa", TASKS["gqa"].load_items(gq), lambda it: "Yes.", tmp_path / "gqa" / "p.json")
    assert json.loads(res.read_text()) == [{"questionId": "7", "prediction": "yes"}]
    assert score_task("gqa", [gq], res)["main"] == 100.0
    vz = files.json("vz.json", [{"image": "v0.jpg", "question": "What?", "answerable": 0, "answer_type": "unanswerable",
                                 "answers": [{"answer": "unanswerable", "answer_confidence": "yes"}] * 10}])
    res = _oracle_run("vizwiz", TASKS["vizwiz"].load_items(vz), lambda it: "Unanswerable", tmp_path / "vz" / "r.json")
    r = score_task("vizwiz", [vz], res)
    assert r["main"] == 100.0 and r["metrics"]["unanswerable_f1"] == 100.0


def test_pope_results_file(files, tmp_path):
    labels = files.jsonl("coco_pope_popular.json", [{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?",
                                                      "label": "no"}])
    res = _oracle_run("pope", TASKS["pope"].load_items([labels]), lambda it: "No", tmp_path / "pope" / "r.jsonl")
    assert json.loads(res.read_text()) == {"question_id": "popular:1", "text": "No", "category": "popular"}
    assert score_task("pope", [labels], res)["metrics"]["per_split"]["popular"]["accuracy"] == 100.0
