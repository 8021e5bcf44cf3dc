"""``eval score`` / ``report`` / ``submit`` through the CLI, and malformed inputs: one line, exit code 2."""

from __future__ import annotations

import json

import pytest
from eval_run_utils import MAX_NEW_TOKENS, make_model_dir, read_jsonl, write_json, write_jsonl, write_oracle, write_task

from qmamba.cli import main
from qmamba.eval import TASKS

N_SCORED = {"vqav2": 5, "gqa": 5, "vizwiz": 5, "textvqa": 5, "pope": 6, "mmbench": 2}  # MMBench: circular groups


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


@pytest.mark.parametrize("task", list(TASKS))
def test_oracle_scores_100_with_per_question_file(task, tmp_path, capsys):
    files = write_task(task, tmp_path / "data")
    suffix = {"pope": ".jsonl", "mmbench": ".tsv"}.get(task, ".json")
    oracle = write_oracle(files, tmp_path / f"oracle{suffix}")
    out, per_q = tmp_path / "m" / "metrics.json", tmp_path / "per_q.jsonl"
    argv = ["eval", "score", "--task", task, "--annotations", *map(str, files.annotations), "--predictions",
            str(oracle), "--out", str(out), "--per-question", str(per_q)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["main"] == 100.0 and result["counts"]["n_missing"] == 0
    rows = read_jsonl(per_q)
    assert len(rows) == N_SCORED[task] and all(r["score"] == 100.0 for r in rows)
    printed = capsys.readouterr().out
    assert printed.startswith(f"{task}:") and f"{result['main_metric']} (main)" in printed and "100.00" in printed


def test_score_counts_a_wrong_answer(tmp_path, capsys):
    files = write_task("vqav2", tmp_path / "data")
    oracle = write_oracle(files, tmp_path / "oracle.json")
    records = json.loads(oracle.read_text())
    records[0]["answer"] = "purple"  # 1 of 5 wrong
    write_json(oracle, records[:4] + [])  # and the 5th unanswered
    argv = ["eval", "score", "--task", "vqav2", "--annotations", str(files.annotations[0]), "--predictions",
            str(oracle), "--out", str(tmp_path / "m.json")]
    assert main(argv) == 0 and json.loads((tmp_path / "m.json").read_text())["main"] == 60.0
    assert "1 missing (missing=wrong)" in capsys.readouterr().out
    assert main(argv + ["--missing", "skip"]) == 0 and json.loads((tmp_path / "m.json").read_text())["main"] == 75.0


def test_report_lists_both_runs(model_dir, tmp_path, capsys):
    files = write_task("gqa", tmp_path / "data")
    assert main(["eval", "run", "--model", str(model_dir), *files.run_args(), "--out", str(tmp_path / "run_a"),
                 "--max-new-tokens", str(MAX_NEW_TOKENS), "--model-id", "tiny-a", "--no-progress"]) == 0
    vqa = write_task("vqav2", tmp_path / "vqa")
    oracle = write_oracle(vqa, tmp_path / "o.json")
    assert main(["eval", "score", "--task", "vqav2", "--annotations", str(vqa.annotations[0]), "--predictions",
                 str(oracle), "--out", str(tmp_path / "run_b" / "vqav2" / "metrics.json"), "--model-name",
                 "oracle-b"]) == 0
    capsys.readouterr()
    gqa_main = json.loads((tmp_path / "run_a" / "gqa" / "metrics.json").read_text())["main"]
    assert main(["eval", "report", str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--out",
                 str(tmp_path / "report.md")]) == 0
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "report.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in printed.splitlines()
            if line.startswith("| ")}
    assert rows["tiny-a"] == ["–", f"{gqa_main:.2f}", "–", "–", "–", "–"]
    assert rows["oracle-b"] == ["100.00", "–", "–", "–", "–", "–"]
    assert "*Q-Mamba, 256 queries (paper Table 1)*" in rows


def test_submit_vqav2_and_refusals(tmp_path, capsys):
    qs = write_jsonl(tmp_path / "llava_vqav2_mscoco_test2015.jsonl",
                     [{"question_id": i, "image": f"{i}.jpg", "text": "q"} for i in (1, 2)])
    preds = write_jsonl(tmp_path / "p.jsonl", [{"question_id": 2, "text": "Two dogs."}])
    assert main(["eval", "submit", "--task", "vqav2", "--questions", str(qs), "--predictions", str(preds),
                 "--out", str(tmp_path / "up.json")]) == 0
    assert json.loads((tmp_path / "up.json").read_text()) == [{"question_id": 1, "answer": ""},
                                                               {"question_id": 2, "answer": "2 dogs"}]
    assert "1 answers for 2 questions" in capsys.readouterr().out
    assert main(["eval", "submit", "--task", "pope", "--predictions", str(preds), "--out", "x.json"]) == 2
    assert main(["eval", "submit", "--task", "vizwiz", "--predictions", str(preds), "--out", "x.json"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "TextVQA val and POPE are scored locally" in err[0] and "pass --questions" in err[1]


def _score(files, preds, tmp_path):
    return ["eval", "score", "--task", files.task, "--annotations", *map(str, files.annotations),
            "--predictions", str(preds), "--out", str(tmp_path / "m.json")]


def _run(files, model_dir, tmp_path, *extra, task=None, questions=None, images=True):
    questions = questions or list(map(str, files.questions))
    argv = ["eval", "run", "--model", str(model_dir), "--task", task or files.task, "--questions", *questions,
            "--out", str(tmp_path / "out"), "--no-progress", *extra]
    return argv + (["--images", str(files.images)] if images and files.images else [])


MALFORMED = {
    "unknown ids": (lambda f, m, t: _score(f, write_json(t / "p.json", [{"question_id": 77, "answer": "x"}]), t),
                    "1 prediction(s) for questions not in"),
    "empty predictions": (lambda f, m, t: _score(f, write_json(t / "p.json", []), t), "no predictions in the file"),
    "annotations as predictions": (lambda f, m, t: _score(f, f.annotations[0], t), "is this an annotations file?"),
    "unknown task": (lambda f, m, t: ["eval", "score", "--task", "okvqa", "--annotations", "a", "--predictions", "p",
                                      "--out", "o"], "unknown task 'okvqa'"),
    "run: unknown task": (lambda f, m, t: _run(f, m, t, task="okvqa"), "unknown task 'okvqa'"),
    "run: no questions file": (lambda f, m, t: _run(f, m, t, questions=[str(t / "nope.json")]),
                               "nope.json: no such file"),
    "run: two questions files": (lambda f, m, t: _run(f, m, t, questions=[str(f.questions[0])] * 2),
                                 "give one questions file, got 2"),
    "run: no --images": (lambda f, m, t: _run(f, m, t, images=False), "pass the folder holding them (--images DIR)"),
    "run: image missing": (lambda f, m, t: (f.images / "COCO_val2014_000000000003.jpg").unlink() or _run(f, m, t),
                           "1 of 5 images are not in"),
    "run: bad shard": (lambda f, m, t: _run(f, m, t, "--shard", "2/2"), "the index must be in 0..1"),
    "run: bad batch size": (lambda f, m, t: _run(f, m, t, "--batch-size", "0"), "batch-size must be a positive"),
    "run: no annotations file": (lambda f, m, t: _run(f, m, t, "--annotations", str(t / "x.json")),
                                 "no such annotations file"),
    "run: bad scoring option": (lambda f, m, t: _run(f, m, t, "--pipeline", "raw"),
                                "pipeline='raw' is not one of ('llava', 'official')"),
    "run: option of another task": (lambda f, m, t: _run(f, m, t, "--extractor", "vlmevalkit"),
                                    "task 'vqav2' takes no option(s) ['extractor']"),
    "run: no model": (lambda f, m, t: _run(f, t / "no_model", t), "no_model does not exist"),
    "merge: nothing to merge": (lambda f, m, t: ["eval", "merge", str(t)], "no predictions.shard-I-of-N.jsonl files"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_inputs_give_one_line_errors(case, model_dir, tmp_path, capsys):
    files = write_task("vqav2", tmp_path / "data")
    make_argv, message = MALFORMED[case]
    assert main(make_argv(files, model_dir, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qmamba eval: error: ") and message in err, err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("out/*/predictions*.jsonl"))  # failed before asking anything
