"""Every evaluation file has the structure of the official file (docs/scoring.md),
its LLaVA question file matches it, and the ground truth it holds scores 100% as an oracle."""

from __future__ import annotations

import base64
import collections
import csv
import io
import re

from PIL import Image
from synth_oracle import read_json, read_jsonl

SHORT = "\nAnswer the question using a single word or phrase."
VIZWIZ = "\nWhen the provided information is insufficient, respond with 'Unanswerable'." + SHORT
NUMBERS = {w: str(i) for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])}


def _norm(a: str) -> str:
    """The VQA normalisation, as far as these answers need it (case, punctuation, articles, numbers)."""
    words = re.sub(r"[;/\[\]\"{}()=+\\_\-><@`,?!.]", " ", a.lower()).split()
    return " ".join(NUMBERS.get(w, "0" if w == "none" else w) for w in words if w not in ("a", "an", "the"))


def vqa_accuracy(pred: str, gts: list[str], normalise_gt: str) -> float:
    """VQA leave-one-out accuracy; ``normalise_gt``: "if-disagree" (VQAv2), "never" (VizWiz), "always"."""
    if normalise_gt == "always" or (normalise_gt == "if-disagree" and len(set(gts)) > 1):
        gts, pred = [_norm(g) for g in gts], _norm(pred)
    elif normalise_gt == "never":
        pred = _norm(pred)
    return sum(min(1.0, sum(g == pred for j, g in enumerate(gts) if j != i) / 3) for i in range(len(gts))) / len(gts)


def test_vqa_accuracy_helper_can_fail():
    assert vqa_accuracy("2", ["2"] * 7 + ["two"] * 3, "if-disagree") == 1.0
    assert vqa_accuracy("two", ["2"] * 10, "if-disagree") == 0.0  # unanimous GT: no normalisation
    assert vqa_accuracy("two", ["two"] * 10, "never") == 0.0  # VizWiz: GT as stored


def test_vqav2_files(world):
    q = read_json(world.path("eval", "vqav2", "questions"))
    a = read_json(world.path("eval", "vqav2", "annotations"))
    assert {"info", "task_type", "data_type", "data_subtype", "license", "questions"} <= set(q)
    assert {"info", "data_type", "data_subtype", "license", "annotations"} <= set(a)
    questions = {x["question_id"]: x for x in q["questions"]}
    assert len(questions) == len(q["questions"]) == len(a["annotations"]) > 0
    for ann in a["annotations"]:
        assert set(ann) == {"question_id", "image_id", "question_type", "answer_type", "multiple_choice_answer",
                            "answers"}
        assert questions[ann["question_id"]]["image_id"] == ann["image_id"]
        assert ann["answer_type"] in {"yes/no", "number", "other"}
        assert [x["answer_id"] for x in ann["answers"]] == list(range(1, 11))
        assert all(set(x) == {"answer", "answer_confidence", "answer_id"} for x in ann["answers"])
        gts = [x["answer"] for x in ann["answers"]]
        assert vqa_accuracy(ann["multiple_choice_answer"], gts, "if-disagree") == 1.0, ann
    every = [x["answer"] for ann in a["annotations"] for x in ann["answers"]]
    assert any(w in every for w in NUMBERS), "no number-word variants ('two') among the human answers"
    rows = read_jsonl(world.path("eval", "vqav2", "llava_questions"))
    assert [r["question_id"] for r in rows] == list(questions)
    for r in rows:
        qq = questions[r["question_id"]]
        assert r["text"] == qq["question"] + SHORT and r["category"] == "default"
        assert r["image"] == f"COCO_val2014_{qq['image_id']:012d}.jpg"  # the official name
        assert (world.path("eval", "vqav2", "image_folder") / r["image"]).is_file()


def test_gqa_files(world):
    entries = read_json(world.path("eval", "gqa", "questions"))
    keys = {"question", "imageId", "answer", "fullAnswer", "isBalanced", "types", "groups", "semantic",
            "semanticStr", "entailed", "equivalent", "annotations"}
    binary = collections.Counter()
    for qid, e in entries.items():
        assert isinstance(qid, str) and keys <= set(e), qid
        assert e["isBalanced"] is True and set(e["types"]) == {"structural", "semantic", "detailed"}
        assert e["types"]["structural"] in {"query", "verify", "logical", "compare", "choose"}
        assert e["answer"] == e["answer"].lower().rstrip(".")  # survives LLaVA's conversion unchanged
        if e["types"]["structural"] in ("verify", "logical", "compare"):
            binary[e["answer"]] += 1
    structural = collections.Counter(e["types"]["structural"] for e in entries.values())
    assert set(structural) == {"query", "verify", "logical", "compare", "choose"}, structural
    assert set(binary) == {"yes", "no"} and abs(binary["yes"] - binary["no"]) <= 1, binary
    rows = read_jsonl(world.path("eval", "gqa", "llava_questions"))
    assert [r["question_id"] for r in rows] == list(entries)
    for r in rows:
        e = entries[r["question_id"]]
        assert r["text"] == e["question"] + SHORT and r["image"] == e["imageId"] + ".jpg"
        assert (world.path("eval", "gqa", "image_folder") / r["image"]).is_file()


def test_vizwiz_files(world):
    records = read_json(world.path("eval", "vizwiz", "annotations"))
    assert isinstance(records, list) and records
    assert len({r["image"] for r in records}) == len(records), "VizWiz has one question per image"
    for r in records:
        assert set(r) == {"image", "question", "answers", "answer_type", "answerable"}
        assert len(r["answers"]) == 10 and all(set(x) == {"answer", "answer_confidence"} for x in r["answers"])
        assert r["answer_type"] in {"yes/no", "number", "other", "unanswerable"}
        assert r["answerable"] == int(r["answer_type"] != "unanswerable")
        gts = [x["answer"] for x in r["answers"]]
        oracle = collections.Counter(gts).most_common(1)[0][0]
        assert vqa_accuracy(oracle, gts, "never") == 1.0, r
        assert (oracle == "unanswerable") == (r["answerable"] == 0)
    kinds = collections.Counter(r["answer_type"] for r in records)
    assert kinds["unanswerable"] >= 3 and kinds["other"] > 0, kinds
    rows = read_jsonl(world.path("eval", "vizwiz", "llava_questions"))
    assert [r["text"] for r in rows] == [r["question"] + VIZWIZ for r in records]
    assert [r["image"] for r in rows] == [r["image"] for r in records]


def test_textvqa_files(world):
    top = read_json(world.path("eval", "textvqa", "annotations"))
    data = top["data"]
    keys = set()
    for d in data:
        assert {"question", "image_id", "answers", "question_id"} <= set(d) and len(d["answers"]) == 10
        oracle = collections.Counter(d["answers"]).most_common(1)[0][0]
        assert vqa_accuracy(oracle, d["answers"], "always") == 1.0, d
        keys.add((d["image_id"], d["question"].lower()))
    assert len(keys) == len(data), "LLaVA's eval_textvqa keys annotations by (image_id, question.lower())"
    scenes = {s["image"]: s for s in read_json(world.path("eval", "textvqa", "scenes"))}
    for name, n_lines in (("llava_questions", 3), ("llava_questions_no_ocr", 2)):
        rows = read_jsonl(world.path("eval", "textvqa", name))
        assert len(rows) == len(data)
        for r, d in zip(rows, data):
            lines = r["text"].split("\n")
            assert len(lines) == n_lines and lines[0] == d["question"] and r["question_id"] == d["image_id"]
            assert r["image"] == d["image_id"] + ".jpg"
            if n_lines == 3:
                texts = [o["text"] for o in scenes[r["image"]]["objects"] if o["text"]]
                assert texts and lines[1] == "Reference OCR token: " + ", ".join(texts)


def test_pope_files(world):
    folder = world.path("eval", "pope", "labels_random").parent
    assert sorted(p.name[10:-5] for p in folder.iterdir()) == ["adversarial", "popular", "random"]
    llava = read_jsonl(world.path("eval", "pope", "llava_questions"))
    assert len({r["question_id"] for r in llava}) == len(llava)
    for split in ("random", "popular", "adversarial"):
        labels = read_jsonl(world.path("eval", "pope", f"labels_{split}"))
        assert all(set(r) == {"question_id", "image", "text", "label"} for r in labels)
        assert [r["question_id"] for r in labels] == list(range(1, len(labels) + 1))
        mine = [r for r in llava if r["category"] == split]
        assert [r["text"] for r in mine] == [r["text"] + SHORT for r in labels]
        assert [r["image"] for r in mine] == [r["image"] for r in labels]


def test_mmbench_tsv_structure(world):
    with open(world.path("eval", "mmbench", "tsv"), newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
    assert reader.fieldnames == ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
                                 "source", "l2-category", "comment", "split"]
    assert len({r["index"] for r in rows}) == len(rows)
    for r in rows:
        options = [r[k] for k in "ABCD"]
        n = sum(map(bool, options))
        assert 2 <= n <= 4 and all(options[:n]) and not any(options[n:]), r["index"]
        assert r["answer"] in "ABCD"[:n] and r["split"] == "dev" and r["l2-category"]
    image = Image.open(io.BytesIO(base64.b64decode(rows[0]["image"])))
    assert image.size == (world.config["image_size"],) * 2
