"""Every generated evaluation set goes through ``qmamba eval score`` like the real benchmarks: oracle
predictions (read from the ground truth of the files themselves) score 100 on every task, and
always answering "yes" on POPE gives the numbers computed by hand from the label counts."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from qmamba.eval.score import score_task

SPLITS = ("random", "popular", "adversarial")


def _write(path, records, jsonl=False):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) if jsonl else json.dumps(records))
    return path


def _mode(answers: list) -> str:
    return Counter(a["answer"] if isinstance(a, dict) else a for a in answers).most_common(1)[0][0]


def _oracle(world, task: str, tmp_path):
    """(annotations, predictions file) of the right answers in the task's official results format."""
    p = lambda key: world.path("eval", task, key)  # noqa: E731
    out = tmp_path / f"{task}_oracle"
    if task == "vqav2":
        anns = json.loads(p("annotations").read_text())["annotations"]
        return [p("annotations")], _write(out, [{"question_id": a["question_id"], "answer": a["multiple_choice_answer"]}
                                                for a in anns])
    if task == "gqa":
        qs = json.loads(p("questions").read_text())
        return [p("questions")], _write(out, [{"questionId": k, "prediction": v["answer"]} for k, v in qs.items()])
    if task == "vizwiz":
        anns = json.loads(p("annotations").read_text())
        return [p("annotations")], _write(out, [{"image": a["image"], "answer": _mode(a["answers"])} for a in anns])
    if task == "textvqa":
        data = json.loads(p("annotations").read_text())["data"]
        return [p("annotations")], _write(out, [{"question_id": d["question_id"], "answer": _mode(d["answers"])}
                                                for d in data])
    if task == "pope":
        labels = [p(f"labels_{s}") for s in SPLITS]
        preds = [{"question_id": r["question_id"], "text": r["label"].capitalize() + ".", "category": s}
                 for s, f in zip(SPLITS, labels) for r in map(json.loads, f.read_text().splitlines())]
        return labels, _write(out, preds, jsonl=True)
    rows = list(csv.DictReader(p("tsv").open(), delimiter="\t"))  # mmbench
    with (tmp_path / "mmbench_oracle.tsv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*rows[0], "prediction"], delimiter="\t")
        w.writeheader()
        w.writerows({**r, "prediction": r["answer"]} for r in rows)
    return [p("tsv")], tmp_path / "mmbench_oracle.tsv"


@pytest.mark.parametrize("task", ["vqav2", "gqa", "vizwiz", "textvqa", "pope", "mmbench"])
def test_oracle_predictions_score_100(world, task, tmp_path):
    annotations, predictions = _oracle(world, task, tmp_path)
    result = score_task(task, annotations, predictions, per_question=tmp_path / "per_question.jsonl")
    assert result["main"] == pytest.approx(100.0), result["metrics"]
    assert result["counts"].get("n_missing", 0) == 0


def test_always_yes_on_pope_gives_the_hand_computed_numbers(world, tmp_path):
    labels = [world.path("eval", "pope", f"labels_{s}") for s in SPLITS]
    preds = [{"question_id": r["question_id"], "text": "Yes", "category": s}
             for s, f in zip(SPLITS, labels) for r in map(json.loads, f.read_text().splitlines())]
    result = score_task("pope", labels, _write(tmp_path / "yes.jsonl", preds, jsonl=True))
    for split, f in zip(SPLITS, labels):
        counts = Counter(json.loads(line)["label"] for line in f.read_text().splitlines())
        n, yes = sum(counts.values()), counts["yes"]
        precision = yes / n
        m = result["metrics"]["per_split"][split]
        assert m["accuracy"] == pytest.approx(100 * yes / n)
        assert m["precision"] == pytest.approx(100 * precision) and m["recall"] == pytest.approx(100.0)
        assert m["f1"] == pytest.approx(100 * 2 * precision / (precision + 1))
        assert m["yes_ratio"] == pytest.approx(100.0)
        assert yes == n - yes  # the generator balances yes and no in every split
