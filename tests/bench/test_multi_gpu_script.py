"""benchmarks/multi_gpu.py's bookkeeping on hand-made run folders: the figures of a stage's metrics.jsonl,
scaling efficiency, and a run left as if it died after a checkpoint."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "multi_gpu.py"


@pytest.fixture(scope="module")
def mg():
    spec = importlib.util.spec_from_file_location("multi_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
