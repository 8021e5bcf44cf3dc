"""`qmamba replicate` end to end at a tiny size on CPU: two presets, two seeds; a run killed in its evaluation
resumes without retraining, finished runs are skipped, a deleted result is redone alone, and the report
(markdown, JSON, PNG) carries the paper's numbers, 95% intervals and every finding's status."""

from __future__ import annotations

import dataclasses
import json

import pytest
from PIL import Image

import qmamba.eval.runner
import qmamba.train.runner
from qmamba.assets import resolve
from qmamba.cli import main
from qmamba.replicate import ReplicateOptions, replicate
from qmamba.replicate.backbones import fingerprint
from qmamba.replicate.findings import FINDINGS
from qmamba.replicate.tiers import TIERS

TINY = dataclasses.replace(TIERS["tiny"], n_align=8, n_finetune=8, n_eval=2, batch_size=2, max_steps=1,
                           checkpoint_every_steps=1, max_new_tokens=4)
PRESETS = ["cobra", "qformer"]
RUNS = [f"table1/{p}/seed{s}" for s in (0, 1) for p in PRESETS]  # seed by seed


class Kill(Exception):
    pass


def counting(monkeypatch, module, name: str, fail_at: int | None = None) -> list:
    """Wrap ``module.name``, recording each call; the ``fail_at``-th call (1-based) raises ``Kill``."""
    real, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(args[:2])
        if len(calls) == fail_at:
            raise Kill(f"{name} call {fail_at}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_replicate_tiny_end_to_end_with_resume(tmp_path, monkeypatch, capsys):
    out = tmp_path / "rep"
    opts = ReplicateOptions(out=str(out), tier=TINY, seeds=2, experiments=["table1"], presets=PRESETS,
                            device="cpu")
    # 1. killed in the second run's evaluation (its third task), after its training finished
    trains = counting(monkeypatch, qmamba.train.runner, "train")
    counting(monkeypatch, qmamba.eval.runner, "run_eval", fail_at=6 + 3)
    with pytest.raises(Kill):
        replicate(opts)
    assert len(trains) == 2
    assert (out / "runs/table1/cobra/seed0/result.json").is_file()
    assert not (out / "runs/table1/qformer/seed0/result.json").exists()
    assert (out / "train/qformer-22/seed0/1-finetune/DONE").is_file()
    first = (out / "runs/table1/cobra/seed0/result.json").stat().st_mtime_ns
    # 2. the same command resumes: the killed run is not retrained, the finished one is skipped
    monkeypatch.undo()
    trains = counting(monkeypatch, qmamba.train.runner, "train")
    args = ["replicate", "--tier", "tiny", "--out", str(out), "--seeds", "2", "--experiments", "table1",
            "--presets", ",".join(PRESETS), "--device", "cpu", "--n-align", "8", "--n-finetune", "8",
            "--n-eval", "2", "--batch-size", "2", "--max-steps", "1"]
    monkeypatch.setattr("qmamba.replicate.tiers.TIERS", {**TIERS, "tiny": TINY})
    assert main(args) == 0
    assert "ran 3 run(s)" in capsys.readouterr().out
    assert len(trains) == 2 and all("seed1" in str(c[0].run.output_dir) for c in trains)  # seed 1 only
    assert (out / "runs/table1/cobra/seed0/result.json").stat().st_mtime_ns == first
    # 3. a deleted result is redone alone, from its finished evaluation, with nothing trained
    (out / "runs/table1/qformer/seed1/result.json").unlink()
    monkeypatch.setattr(qmamba.train.runner, "train", lambda *a, **k: pytest.fail("nothing should train"))
    report = replicate(opts)
    assert report["ran"] == ["table1/qformer/seed1"]
    check_report(out, report)


def check_report(out, report: dict) -> None:
    rows = {r["variant"]: r for r in report["cells"]["table1"]}
    assert set(rows) == set(PRESETS) and report["missing_runs"] == []
    for r in rows.values():
        assert r["seeds"] == [0, 1]
        for task, iv in r["tasks"].items():
            assert iv["n"] == 2 and iv["ci95"] is not None and iv["low"] <= iv["mean"] <= iv["high"], task
    assert rows["cobra"]["paper"]["vqav2"] == 75.38 and rows["qformer"]["paper"] is None
    assert rows["qformer"]["visual_tokens"] == 22 and rows["cobra"]["visual_tokens"] == 64
    assert [f["key"] for f in report["findings"]] == [f.key for f in FINDINGS]
    assert {f["status"] for f in report["findings"]} == {"not run"}  # no Q-Mamba cell ran
    assert json.loads((out / "report.json").read_text())["cells"] == json.loads(json.dumps(report["cells"]))
    md = (out / "report.md").read_text()
    assert "| Cobra (MLP) | 64 |" in md and "*paper: Cobra\\**" in md and " ± " in md and "*75.38*" in md
    assert "## Findings" in md and "Needs model support" in md
    shipped = fingerprint((resolve(TINY.llm), resolve(TINY.vision)))
    assert report["backbones"] == [{"fingerprint": shipped, "runs": 4}] and f"`{shipped}`: 4 run(s)" in md
    for name in ("table1.png", "pareto_tokens.png"):
        with Image.open(out / "plots" / name) as img:
            assert img.size[0] > 100


def test_a_run_killed_in_training_resumes_at_its_unfinished_stage(tmp_path, monkeypatch):
    import qmamba.train.loop
    import qmamba.train.runner

    opts = ReplicateOptions(out=str(tmp_path / "rep"), tier=TINY, seeds=1, experiments=["table1"],
                            presets=["cobra"], device="cpu")
    stages = counting(monkeypatch, qmamba.train.runner, "run_stage", fail_at=2)  # killed entering finetune
    with pytest.raises(Kill):
        replicate(opts)
    assert len(stages) == 2
    monkeypatch.undo()
    built = counting(monkeypatch, qmamba.train.loop, "StageTrainer")
    assert replicate(opts)["ran"] == ["table1/cobra/seed0"]
    assert [trainer[1] for trainer in built] == [1]  # only the finetune stage was trained again
