"""MMBench: the three letter extractors, CircularEval grouping, prompts, images, end to end (docs/scoring.md, MMBench)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from qmamba.eval import TASKS, answer_record, score_task
from qmamba.eval.errors import EvalFileError, PredictionMismatchError
from qmamba.eval.io import write_tsv
from qmamba.eval.tasks.mmbench import build_prompt, circular_groups, extract_letter, load_image, score_group
from qmamba.eval.xlsx import write_xlsx

SOFA = {"A": "on the floor", "B": "on the sofa", "C": "on the bed", "D": "on the table"}
HEAD, ACA, OC = "vlmevalkit", "vlmevalkit-aca64dbb", "opencompass-2023"


@pytest.mark.parametrize("answer, head, aca, oc", [
    # docs/scoring.md's disagreement examples; False = undecided
    ("A dog is sitting on the sofa.", "B", "A", "B"),  # HEAD: 'A' not in last 4 tokens -> text; OC: 'A' aborts
    ("B. Because the image is blurry", False, "B", "B"),  # HEAD: 'B' too early, no text match; OC: "B." form
    ("The answer is B because C is wrong.", "B", False, False),  # HEAD's "answer is" regex
    ("**C**", "C", "C", False),  # OC has no '*' handling
])
def test_extractors_disagree_as_the_spec_says(answer, head, aca, oc):
    assert extract_letter(answer, SOFA, HEAD) == head
    assert extract_letter(answer, SOFA, ACA) == aca
    assert extract_letter(answer, SOFA, OC) == oc


@pytest.mark.parametrize("answer, expected", [
    ("Cannot determine the answer", "Z"),
    ("Z", "Z"),
    ("B is my choice", "B"),            # 4 tokens: index 0 > 4 - 5
    ("B is my final choice", False),    # 5 tokens: index 0 is not > 0
    ("the answer is a", "A"),           # the regex is case-insensitive, the letter upper-cased
    ("Failed to obtain answer via API", False),
    ("(C)", "C"),
])
def test_vlmevalkit_head_rules(answer, expected):
    assert extract_letter(answer, SOFA, HEAD) == expected


def test_text_match_length_guard_only_in_head():
    pets = {"A": "cat", "B": "dog"}  # 2 x 6 characters = 12 < len("I think it is a dog")
    assert extract_letter("I think it is a dog", pets, HEAD) is False
    assert extract_letter("I think it is a dog", pets, ACA) == "B"
    assert extract_letter("a dog", pets, HEAD) == "B"
    assert extract_letter("a cat or a dog", pets, ACA) is False  # two options match


@pytest.mark.parametrize("answer, expected", [
    ("(B)", "B"), ("Answer :C.", "C"), ("B).", "B"), ("E", "E"), ("A", "A"), ("A is right here", False),
])
def test_opencompass_2023_forms(answer, expected):
    assert extract_letter(answer, SOFA, OC) == expected


def test_circular_groups_by_index_mod_1e6():
    rows = [{"index": i} for i in (3000241, 241, 1000241, 5, 2000241, 1000005, 1000009)]
    groups, orphans = circular_groups(rows)
    assert {g: [r["index"] for r in rs] for g, rs in groups.items()} == {
        241: [241, 1000241, 2000241, 3000241], 5: [5, 1000005]}
    assert orphans == 1  # 1000009 has no main row 9


def test_score_group_rules():
    rows = [{"index": 1, "answer": "A", **SOFA}, {"index": 1000001, "answer": "B", **SOFA}]
    assert score_group(rows, {1: "A", 1000001: "B"}, HEAD)["hit"] == 1
    assert score_group(rows, {1: "A", 1000001: "C"}, HEAD)["hit"] == 0
    undecided = score_group(rows, {1: "A", 1000001: "no idea"}, HEAD)
    assert undecided["hit"] == 0 and undecided["reason"].startswith("undecided")
    assert score_group(rows, {1: "Cannot determine the answer", 1000001: "B"}, HEAD)["hit"] == 0  # 'Z' is wrong
    assert score_group(rows, {1: "A"}, HEAD)["hit"] == 0  # a missing row is undecided


def test_llava_prompt():
    row = {"index": 1, "question": "What is it?", "hint": "A hint.", "A": "cat", "B": "dog", "C": "nan", "D": "x"}
    assert build_prompt(row) == ("A hint.\nWhat is it?\nA. cat\nB. dog\n"
                                 "Answer with the option's letter from the given choices directly.")
    assert build_prompt({**row, "hint": "nan", "C": "none"}).startswith("What is it?\nA. cat\nB. dog\nAnswer")
    assert build_prompt({**row, "hint": "", "C": "bird", "D": ""}).count("\n") == 4


def _png_b64(color):
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source", "l2-category",
           "comment", "split"]


def _rows():
    def row(index, answer, opts, category, l2, image):
        return {"index": index, "question": f"q{index % 1000000}", "hint": "nan", **dict(zip("ABCD", opts)),
                "answer": answer, "category": category, "image": image, "source": "s", "l2-category": l2,
                "comment": "", "split": "dev"}
    img = _png_b64("red")
    return [row(1, "A", ["cat", "dog", "", ""], "identity_reasoning", "AR", img),
            row(1000001, "B", ["dog", "cat", "", ""], "identity_reasoning", "AR", "1"),  # image: index reference
            row(2, "C", ["x", "y", "z", "w"], "ocr", "FP-S", img),
            row(1000002, "D", ["y", "z", "w", "x"], "ocr", "FP-S", img),
            row(3, "B", ["p", "q", "r", ""], "ocr", "FP-S", img)]


@pytest.fixture
def bench(tmp_path):
    path = tmp_path / "mmbench_dev.tsv"
    write_tsv(path, _rows(), COLUMNS)
    return path


def test_items_and_images(bench):
    items = TASKS["mmbench"].load_items(bench)
    assert [it.question_id for it in items] == [1, 1000001, 2, 1000002, 3]
    assert items[0].prompt == "q1\nA. cat\nB. dog\nAnswer with the option's letter from the given choices directly."
    assert load_image(items[1]).getpixel((0, 0)) == (255, 0, 0)  # resolved through the index reference
    assert "image" not in items[0].meta["row"]


def test_end_to_end_table_jsonl_and_xlsx(bench, tmp_path, files):
    preds = {1: "A", 1000001: "B", 2: "C", 1000002: "The answer is A", 3: "B. p"}
    # group 1 right, group 2 wrong on its circular row, group 3 right ("B. p": B within the last 4 tokens)
    rows = [{**r, "prediction": preds[r["index"]]} for r in _rows()]
    write_tsv(tmp_path / "pred.tsv", rows, COLUMNS + ["prediction"])
    write_xlsx(tmp_path / "pred.xlsx", COLUMNS + ["prediction"], rows)
    jsonl = files.jsonl("ans.jsonl", [{"question_id": k, "prompt": "p", "text": v} for k, v in preds.items()])
    for pred_file in (tmp_path / "pred.tsv", tmp_path / "pred.xlsx", jsonl):
        r = score_task("mmbench", [bench], pred_file)
        assert r["main"] == pytest.approx(200 / 3)
        assert r["metrics"]["per_category"] == {"identity_reasoning": 100.0, "ocr": 50.0}
        assert r["metrics"]["per_l2_category"] == {"AR": 100.0, "FP-S": 50.0}
        assert r["metrics"]["per_split"] == {"dev": pytest.approx(200 / 3)}


def test_oracle_and_missing(bench, files):
    oracle = files.jsonl("o.jsonl", [{"question_id": r["index"], "text": r["answer"]} for r in _rows()])
    assert score_task("mmbench", [bench], oracle)["main"] == 100.0
    partial = files.jsonl("p.jsonl", [{"question_id": r["index"], "text": r["answer"]} for r in _rows()[1:]])
    r = score_task("mmbench", [bench], partial)
    assert r["main"] == pytest.approx(200 / 3) and r["counts"]["n_missing"] == 1
    assert score_task("mmbench", [bench], partial, missing="skip")["main"] == 100.0
    for name in ("vlmevalkit-aca64dbb", "opencompass-2023"):
        assert score_task("mmbench", [bench], oracle, extractor=name)["main"] == 100.0


def test_malformed(bench, tmp_path, files):
    with pytest.raises(PredictionMismatchError, match=r"e.g. \['7'\]"):
        score_task("mmbench", [bench], files.jsonl("u.jsonl", [{"question_id": 7, "text": "A"}]))
    test_split = tmp_path / "test.tsv"
    write_tsv(test_split, _rows(), [c for c in COLUMNS if c != "answer"])
    with pytest.raises(EvalFileError, match="no 'answer' column"):
        score_task("mmbench", [test_split], files.jsonl("a.jsonl", [{"question_id": 1, "text": "A"}]))
    with pytest.raises(EvalFileError, match="index 'x1' is not an integer"):
        write_tsv(tmp_path / "bad.tsv", [{**_rows()[0], "index": "x1"}], COLUMNS)
        score_task("mmbench", [tmp_path / "bad.tsv"], files.jsonl("b.jsonl", [{"question_id": 1, "text": "A"}]))


def test_results_file_round_trip(bench, tmp_path):
    items = TASKS["mmbench"].load_items(bench)
    answers = [answer_record(it, f"{it.meta['row']['answer']}.") for it in items if it.question_id != 3]
    results = TASKS["mmbench"].write_results(answers, items, tmp_path / "results.tsv")
    r = score_task("mmbench", [bench], results)
    assert r["main"] == pytest.approx(200 / 3) and r["counts"]["n_missing"] == 1  # index 3 left unanswered
