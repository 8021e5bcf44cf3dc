"""Resuming: a run killed mid-batch or mid-line finishes with the file an uninterrupted run writes, each id
once; --limit answers a prefix and is scored (and labelled) as such; answers from another run are refused."""

from __future__ import annotations

import json

import pytest
from eval_run_utils import MAX_NEW_TOKENS, make_model_dir, pipeline_answers, read_jsonl, write_task

from qmamba.cli import main
from qmamba.eval.errors import EvalFileError, PredictionMismatchError
from qmamba.eval.runner import run_eval
from qmamba.pipeline import Pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


def _run(model_dir, files, out, **kw):
    kw = {"batch_size": 2, "max_new_tokens": MAX_NEW_TOKENS, "show_progress": False, **kw}
    return run_eval(model_dir, files.task, files.questions, files.images, out_dir=out,
                    annotations=files.annotations, **kw)


def _interrupt_after(monkeypatch, n_calls: int) -> list[list[str]]:
    """Make Pipeline.batch raise KeyboardInterrupt on call n_calls + 1; returns the prompts of every call."""
    calls, real = [], Pipeline.batch

    def batch(self, prompts, images, **gen):
        if len(calls) == n_calls:
            raise KeyboardInterrupt
        calls.append(list(prompts))
        return real(self, prompts, images, **gen)

    monkeypatch.setattr(Pipeline, "batch", batch)
    return calls


def test_interrupted_then_torn_line_resumes_to_the_same_file(model_dir, tmp_path, monkeypatch, capsys):
    files = write_task("vqav2", tmp_path / "data")
    full = _run(model_dir, files, tmp_path / "full") / "predictions.jsonl"
    calls = _interrupt_after(monkeypatch, 1)
    argv = ["eval", "run", "--model", str(model_dir), *files.run_args(), "--out", str(tmp_path / "cut"),
            "--batch-size", "2", "--max-new-tokens", str(MAX_NEW_TOKENS), "--no-progress"]
    assert main(argv) == 130 and "interrupted" in capsys.readouterr().err
    cut = tmp_path / "cut" / "vqav2" / "predictions.jsonl"
    assert len(read_jsonl(cut)) == 2 and len(calls) == 1  # the first batch was written before the kill
    with cut.open("a") as fh:  # killed while writing the next line
        fh.write('{"question_id": 30, "prompt": "is the red one le')
    monkeypatch.undo()
    calls = _interrupt_after(monkeypatch, 1)  # killed again after one more batch
    assert main(argv) == 130
    assert len(read_jsonl(cut)) == 4  # the torn line was cut off: every line parses
    monkeypatch.undo()
    calls = _interrupt_after(monkeypatch, 99)
    assert main(argv) == 0
    assert cut.read_bytes() == full.read_bytes()
    assert sum(len(c) for c in calls) == 1  # only the last unanswered question was asked again
    config = json.loads((cut.parent / "run_config.json").read_text())
    assert config["counts"]["n_answered_before"] == 4 and config["counts"]["n_generated"] == 1


def test_truncated_final_file_mid_line(model_dir, tmp_path):
    files = write_task("mmbench", tmp_path / "data")
    path = _run(model_dir, files, tmp_path / "out") / "predictions.jsonl"
    whole = path.read_bytes()
    lines = whole.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # lines 3.. lost, line 3 torn
    task_dir = _run(model_dir, files, tmp_path / "out")
    assert path.read_bytes() == whole
    ids = [r["question_id"] for r in read_jsonl(path)]
    assert len(ids) == len(set(ids)) == 5
    assert json.loads((task_dir / "run_config.json").read_text())["counts"]["n_generated"] == 3


def test_limit_answers_a_prefix_and_says_so(model_dir, tmp_path):
    probe = write_task("gqa", tmp_path / "probe")
    texts = [e["text"] for e in pipeline_answers(model_dir, probe)]
    # ground truth: the model's own answer (as LLaVA converts it: rstrip('.').lower()) on even questions
    truth = [t.rstrip(".").lower() if k % 2 == 0 else "zzz" for k, t in enumerate(texts)]
    files = write_task("gqa", tmp_path / "data", truth)
    task_dir = _run(model_dir, files, tmp_path / "out", limit=2)
    assert [r["text"] for r in read_jsonl(task_dir / "predictions.jsonl")] == texts[:2]
    metrics = json.loads((task_dir / "metrics.json").read_text())
    assert metrics["main"] == 50.0  # 1 of the 2 asked
    assert metrics["counts"]["missing_policy"] == "skip" and metrics["counts"]["n_missing"] == 3
    assert metrics["limit"]["n_answered"] == 2 and "--limit 2" in metrics["limit"]["note"]
    task_dir = _run(model_dir, files, tmp_path / "out")  # the full run resumes after the prefix
    assert [r["text"] for r in read_jsonl(task_dir / "predictions.jsonl")] == texts
    metrics = json.loads((task_dir / "metrics.json").read_text())
    assert metrics["main"] == 60.0 and "limit" not in metrics  # 3 of 5
    assert metrics["counts"]["missing_policy"] == "wrong" and metrics["counts"]["complete"]


def test_answers_of_another_run_are_refused(model_dir, tmp_path):
    files = write_task("vqav2", tmp_path / "data")
    task_dir = _run(model_dir, files, tmp_path / "out", limit=1)
    path = task_dir / "predictions.jsonl"
    good = path.read_text()
    with pytest.raises(Exception, match="answers were made with max-new-tokens 3, this run asks 5"):
        _run(model_dir, files, tmp_path / "out", max_new_tokens=5)
    path.write_text(good.replace('"question_id": 10', '"question_id": 99'))
    with pytest.raises(PredictionMismatchError, match="question_id 99 is not among the 5 items"):
        _run(model_dir, files, tmp_path / "out")
    path.write_text(good.replace("Answer the question", "Reply"))
    with pytest.raises(PredictionMismatchError, match="the questions changed"):
        _run(model_dir, files, tmp_path / "out")
    path.write_text("not json\n" + good)
    with pytest.raises(EvalFileError, match=r"predictions.jsonl:1: not a JSON answer line"):
        _run(model_dir, files, tmp_path / "out")
    path.write_text(good + good)
    with pytest.raises(PredictionMismatchError, match="answered twice"):
        _run(model_dir, files, tmp_path / "out")
