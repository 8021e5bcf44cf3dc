"""`qmamba quickstart` end to end at a tiny size: the six-task table printed from the metrics files that
`qmamba eval` wrote, each beside its chance level, the sample answer, and the two stages' model directories."""

from __future__ import annotations

import json
import re

import yaml

from qmamba.cli import main
from qmamba.quickstart import TASKS


def test_quickstart_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "--n-align", "24", "--n-finetune", "24", "--n-eval", "4",
            "--align-epochs", "0.5", "--finetune-epochs", "0.5", "--device", "cpu"]
    assert main(args) == 0
    text = capsys.readouterr().out
    rows = {m[1]: m for m in re.finditer(r"^\| (\w+) \| (\w+) \| ([\d.]+|n/a) \| ([\d.]+) \|$", text, re.M)}
    assert set(rows) == set(TASKS)
    for task in TASKS:
        metrics = json.loads((out / "eval" / task / "metrics.json").read_text())
        main_value = metrics["metrics"]["accuracy_mean_of_splits"] if task == "pope" else metrics["main"]
        assert rows[task][3] == f"{main_value:.1f}", task  # the table prints what the scorer wrote
        assert 0.0 < float(rows[task][4]) < 100.0
    assert re.search(r"^  A: .+\(ground truth: .+\)$", text, re.M)
    config = yaml.safe_load((out / "train" / "config.yaml").read_text())
    assert [s["name"] for s in config["stages"]] == ["align", "finetune"]
    assert (out / "train" / "1-finetune" / "model" / "config.json").exists()


def test_quickstart_help_and_readme_give_the_same_time_and_pope_metric():
    from pathlib import Path

    from qmamba.commands import quickstart as command
    from qmamba.quickstart import pope_note

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    minutes = lambda text: set(re.findall(r"(\d+) minutes on\s+2 CPU\s+cores", text))  # noqa: E731
    assert minutes(command.__doc__) == minutes(readme) != set()
    f1 = re.search(r"^\| micro Q-Mamba-32 \|(?: [\d.]+ \|){4} ([\d.]+) \(([\d.]+)\) \|", readme, re.M)
    assert f1 and "POPE-like F1 (accuracy)" in readme, "the README names the POPE metric: F1, as eval report"
    note = pope_note({"scores": {"pope": {"main": 76.51}}})
    assert "F1" in note and "76.5" in note and "eval report" in note
