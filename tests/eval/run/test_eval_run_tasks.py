"""``eval run`` end to end on every task, through the CLI and through ``run_eval``: the answers are
``Pipeline.batch``'s (whatever the batch size), in question order, scored as ``score_task`` scores them."""

from __future__ import annotations

import json

import pytest
from eval_run_utils import MAX_NEW_TOKENS, make_model_dir, pipeline_answers, read_jsonl, write_jsonl, write_task

from qmamba.cli import main
from qmamba.eval import TASKS, score_task
from qmamba.eval.runner import run_eval


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("model"))


def _official_keys(task: str, results_path) -> set[str]:
    """The fields of the first record of an official results file."""
    if task == "mmbench":
        return set(results_path.read_text(encoding="utf-8").splitlines()[0].split("\t"))
    text = results_path.read_text(encoding="utf-8")
    first = json.loads(text.splitlines()[0]) if task == "pope" else json.loads(text)[0]
    return set(first)


OFFICIAL_FIELDS = {"vqav2": {"question_id", "answer"}, "gqa": {"questionId", "prediction"},
                   "vizwiz": {"image", "answer"}, "textvqa": {"question_id", "answer"},
                   "pope": {"question_id", "text", "category"}, "mmbench": {"index", "prediction", "answer"}}


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_cli_and_api(task, model_dir, tmp_path, capsys):
    files = write_task(task, tmp_path / "data")
    expected = pipeline_answers(model_dir, files)  # one question at a time
    assert len({e["text"] for e in expected}) > 1, "the tiny model should not answer everything alike"
    argv = ["eval", "run", "--model", str(model_dir), *files.run_args(), "--out", str(tmp_path / "cli"),
            "--batch-size", "3", "--max-new-tokens", str(MAX_NEW_TOKENS), "--model-id", "tiny", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    api_dir = run_eval(model_dir, task, files.questions, files.images, out_dir=tmp_path / "api",
                       annotations=files.annotations, batch_size=2, max_new_tokens=MAX_NEW_TOKENS, model_id="tiny")
    cli_dir = tmp_path / "cli" / task
    for folder in (cli_dir, api_dir):
        got = read_jsonl(folder / "predictions.jsonl")
        assert [(g["question_id"], g["prompt"], g["text"]) for g in got] == \
               [(e["question_id"], e["prompt"], e["text"]) for e in expected]
        assert all(g["model_id"] == "tiny" for g in got)
        assert OFFICIAL_FIELDS[task] <= _official_keys(task, folder / TASKS[task].results_filename)
    # metrics == score_task on an answers file written here from the Pipeline's answers
    own = write_jsonl(tmp_path / "own.jsonl", expected)
    questions = files.questions[0] if len(files.questions) == 1 else None
    reference = score_task(task, files.annotations, own, questions)
    metrics = json.loads((cli_dir / "metrics.json").read_text())
    assert metrics["metrics"] == reference["metrics"] and metrics["model"] == "tiny"
    assert metrics["counts"]["n_missing"] == 0 and "limit" not in metrics
    assert len(read_jsonl(cli_dir / "per_question.jsonl")) > 0
    config = json.loads((cli_dir / "run_config.json").read_text())
    assert config["complete"] and config["counts"]["n_generated"] == len(expected)
    assert config["settings"]["max_new_tokens"] == MAX_NEW_TOKENS and config["settings"]["batch_size"] == 3
    assert f"{task}:" in printed and "(main)" in printed


def test_batches_run_longest_prompt_first(model_dir, tmp_path, monkeypatch):
    from qmamba.pipeline import Pipeline

    calls = []
    real = Pipeline.batch

    def spy(self, prompts, images, pixel_values=None, **gen):
        calls.append((list(prompts), gen))
        # the images come preprocessed (the next batch's while this one is answered): one row per image
        assert pixel_values is not None and pixel_values.shape[0] == sum(im is not None for im in images) > 0
        return real(self, prompts, images, pixel_values=pixel_values, **gen)

    monkeypatch.setattr(Pipeline, "batch", spy)
    files = write_task("textvqa", tmp_path / "data")  # odd items carry an OCR line: longer prompts
    run_eval(model_dir, "textvqa", files.questions, files.images, out_dir=tmp_path / "out", batch_size=2,
             max_new_tokens=2, show_progress=False)
    lengths = [len(p) for prompts, _ in calls for p in prompts]
    assert [len(prompts) for prompts, _ in calls] == [2, 2, 1]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] > lengths[-1]
    assert all(gen == {"max_new_tokens": 2, "do_sample": False} for _, gen in calls)
    ids = [r["question_id"] for r in read_jsonl(tmp_path / "out" / "textvqa" / "predictions.jsonl")]
    assert ids == [100, 101, 102, 103, 104]  # file order: the questions file's, not the batches'


def test_default_generation_length_is_the_tasks(model_dir, tmp_path, monkeypatch):
    from qmamba.pipeline import Pipeline

    seen = {}

    def batch(self, prompts, images, **gen):
        seen.setdefault(self.task, set()).add(gen["max_new_tokens"])
        return ["A"] * len(prompts)

    monkeypatch.setattr(Pipeline, "batch", batch)
    for task in ("gqa", "mmbench"):
        files = write_task(task, tmp_path / task)
        pipe = Pipeline.from_pretrained(model_dir)
        pipe.task = task
        run_eval(pipe, task, files.questions, files.images, out_dir=tmp_path / "out", show_progress=False)
    assert seen == {"gqa": {128}, "mmbench": {1024}}  # LLaVA's model_vqa_loader.py / model_vqa_mmbench.py
