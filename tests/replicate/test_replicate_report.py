"""The report from hand-made result files: intervals per task, the paper's rows, finding statuses that follow
the numbers, and the latency column and Pareto plot from `qmamba bench` JSON."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from qmamba.replicate.registry import build_registry
from qmamba.replicate.report import write_report
from qmamba.replicate.run import RESULT, cell_dir, write_json_atomic
from qmamba.replicate.tiers import TIERS

TASKS = ("vqav2", "gqa", "vizwiz", "textvqa", "pope", "mmbench")
# variant -> its score at seeds 0, 1, 2 (every task the same)
SCORES = {"cobra": (40, 41, 42), "vlmamba-bsm": (50, 52, 54), "qmamba-128": (60, 60, 60),
          "qmamba-256": (61, 62, 60), "qmamba-512": (70, 71, 72), "qmamba-729": (80, 81, 82)}


@pytest.fixture
def report(tmp_path):
    cells = [c for c in build_registry(TIERS["tiny"])["table1"] if c.variant in SCORES]
    for cell in cells:
        for seed, value in enumerate(SCORES[cell.variant]):
            write_json_atomic(cell_dir(tmp_path, cell, seed) / RESULT, {"scores": dict.fromkeys(TASKS, value)})
    bench = {"vqa": {"cobra": {"total_ms": 30.0}, "qmamba-128": {"total_ms": 20.0}, "qmamba-729": {"total_ms": 28.0},
                     "vlmamba-bsm": {"error": "out of memory"}}}
    return tmp_path, write_report(tmp_path, "tiny", cells, [0, 1, 2], bench)


def test_report_intervals_findings_and_latency(report):
    out, data = report
    rows = {r["variant"]: r for r in data["cells"]["table1"]}
    assert rows["cobra"]["tasks"]["gqa"]["mean"] == pytest.approx(41.0)
    assert rows["cobra"]["tasks"]["gqa"]["ci95"] == pytest.approx(4.3027 / 3 ** 0.5, abs=1e-4)  # s = 1, n = 3
    assert rows["qmamba-128"]["mean"]["ci95"] == pytest.approx(0.0)
    assert (rows["cobra"]["latency_ms"], rows["vlmamba-bsm"]["latency_ms"], rows["qmamba-256"]["latency_ms"]) == (
        30.0, None, None)
    status = {f["key"]: f["status"] for f in data["findings"]}
    assert status["t1-cobra"] == status["t1-vlmamba"] == "reproduced"  # 81 +- 2.5 above 41 and 52 +- 5
    assert status["queries-256"] == "inconclusive"  # 61 +- 2.5 against 60 +- 0
    assert status["queries-729"] == "reproduced"
    assert status["queries-diminishing"] == "not reproduced"  # gains (1, 9), (2, 9), (0, 12): the second is larger
    assert status["queries-vizwiz"] == "not reproduced"  # VizWiz rises with queries here
    assert status["t2-local"] == "not run" and status["t1-vlmamba-forward"] == "not run"
    md = (out / "report.md").read_text()
    assert "| ms/answer (full size) |" in md and "| 30.0 |" in md
    assert "| Q-Mamba (729/729 queries) outperforms Cobra (VQAv2, GQA, VizWiz, TextVQA, POPE, MMB) | **reproduced** |" in md
    assert "*paper: Q-Mamba, 729 queries*" in md and "*75.62*" in md
    assert json.loads((out / "report.json").read_text())["findings"] == data["findings"]
    for name in ("table1.png", "pareto_tokens.png", "pareto_latency.png"):
        with Image.open(out / "plots" / name) as img:
            assert img.format == "PNG"
