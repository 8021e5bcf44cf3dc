"""benchmarks/multi_gpu.py's bookkeeping on hand-made run folders: the figures of a stage's metrics.jsonl,
scaling efficiency, a run left as if it died after a checkpoint, and the sharded evaluation's comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from testing_utils import benchmark_script


@pytest.fixture(scope="module")
def mg():
    return benchmark_script("multi_gpu")


def _stage(tmp_path: Path, rows: list[dict]) -> Path:
    d = tmp_path / "0-finetune"
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_stage_figures_skip_the_first_steps_and_take_medians(mg, tmp_path):
    rows = [{"step": 1, "step_time_s": 9.0, "tokens_per_s": 10.0, "peak_memory_gb": 3.0},
            {"step": 2, "step_time_s": 2.0, "tokens_per_s": 400.0, "peak_memory_gb": 5.0},
            {"step": 3, "step_time_s": 1.0, "tokens_per_s": 600.0, "peak_memory_gb": 4.0},
            {"step": 4, "step_time_s": 3.0, "tokens_per_s": 200.0}]
    got = mg.stage_figures(_stage(tmp_path, rows), n=2, skip=1)
    assert got == {"procs": 2, "steps": 4, "step_s": 2.0, "tokens_per_s": 400.0, "tokens_per_s_per_proc": 200.0,
                   "peak_gb_rank0": 5.0}


def test_efficiency_is_against_the_first_row_of_the_same_stage(mg):
    rows = [{"stage": "align", "procs": 1, "step_s": 4.0}, {"stage": "finetune", "procs": 1, "step_s": 8.0},
            {"stage": "align", "procs": 2, "step_s": 2.5}, {"stage": "finetune", "procs": 4, "step_s": 2.0}]
    assert [r["efficiency"] for r in mg.add_efficiency(rows)] == [1.0, 1.0, 0.8, 1.0]


def test_cut_after_leaves_the_run_as_if_it_died_after_that_checkpoint(mg, tmp_path):
    d = _stage(tmp_path, [])
    for step in (3, 6, 9):
        (d / "checkpoints" / f"step-{step:08d}").mkdir(parents=True)
    (d / "checkpoints" / "step-00000012.tmp").mkdir()
    (d / "checkpoints" / "latest").write_text("step-00000009\n")
    (d / "model").mkdir()
    (d / "DONE").write_text("9\n")
    mg.cut_after(d, 3)
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["latest", "step-00000003"]
    assert (d / "checkpoints" / "latest").read_text() == "step-00000003\n"
    assert not (d / "model").exists() and not (d / "DONE").exists()


def _eval_run(root: Path, n: int, predictions: str, accuracy: float) -> Path:
    d = root / f"eval-{n}" / "vqav2"
    d.mkdir(parents=True)
    (d / "predictions.jsonl").write_text(predictions)
    (d / "metrics.json").write_text(json.dumps({"main_metric": "accuracy", "main": accuracy,
                                                "metrics": {"accuracy": accuracy}}))
    return d


def test_eval_figures_compare_the_smallest_and_largest_n_and_nothing_with_one(mg, tmp_path):
    one = _eval_run(tmp_path, 1, '{"question_id": 1, "answer": "red"}\n', 50.0)
    alone = mg.eval_figures("vqav2", {1: one})
    assert alone == {"task": "vqav2", "procs": [1], "main_metric": "accuracy", "main": [50.0], "same_metrics": None,
                     "same_predictions": None}
    same = _eval_run(tmp_path, 2, '{"question_id": 1, "answer": "red"}\n', 50.0)
    assert mg.eval_figures("vqav2", {2: same, 1: one})["same_predictions"] is True
    other = _eval_run(tmp_path, 4, '{"question_id": 1, "answer": "blue"}\n', 0.0)
    got = mg.eval_figures("vqav2", {1: one, 4: other})
    assert got["procs"] == [1, 4] and got["main"] == [50.0, 0.0]
    assert got["same_predictions"] is False and got["same_metrics"] is False
