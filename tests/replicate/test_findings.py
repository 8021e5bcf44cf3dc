"""Each finding's status from hand-made per-seed scores: reproduced, not reproduced, inconclusive, not run."""

from __future__ import annotations

import pytest

from qmamba.replicate.findings import FINDINGS, NOT_RUN, judge
from qmamba.replicate.paper import FIVE, PAPER
from qmamba.replicate.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED

BY_KEY = {f.key: f for f in FINDINGS}
TASKS = ("vqav2", "gqa", "vizwiz", "textvqa", "pope", "mmbench")


def flat(*per_seed: float) -> dict[int, dict[str, float]]:
    """seed -> every task scoring the same value."""
    return {seed: dict.fromkeys(TASKS, v) for seed, v in enumerate(per_seed)}


def test_greater_statuses():
    f = BY_KEY["t2-local"]
    local, glob = ("table2", "local"), ("table2", "global")
    # local 80, 82 -> 81 +- 12.71 = [68.3, 93.7]; global 50, 52 -> [38.3, 63.7]: separate, local above
    assert judge(f, {local: flat(80, 82), glob: flat(50, 52)})["status"] == REPRODUCED
    assert judge(f, {local: flat(50, 52), glob: flat(80, 82)})["status"] == NOT_REPRODUCED
    verdict = judge(f, {local: flat(60, 62), glob: flat(50, 52)})  # [48.3, 73.7] vs [38.3, 63.7]: overlap
    assert verdict["status"] == INCONCLUSIVE
    assert verdict["ours"]["table2/local"]["mean"] == pytest.approx(61.0)
    assert verdict["ours"]["table2/local"]["ci95"] == pytest.approx(12.7062, abs=1e-4)
    assert "table2/local 61.00 ± 12.71 vs table2/global 51.00 ± 12.71" in verdict["decides"]
    assert judge(f, {local: flat(80, 82)})["status"] == NOT_RUN
    assert judge(f, {local: flat(80), glob: flat(50)})["status"] == INCONCLUSIVE  # one seed each: no interval


def test_finding_uses_only_its_tasks_and_the_papers_figures():
    f = BY_KEY["queries-vizwiz"]  # VizWiz alone: 128 queries above 729
    a, b = ("table1", "qmamba-128"), ("table1", "qmamba-729")
    high_vizwiz = {s: {**dict.fromkeys(TASKS, 10.0), "vizwiz": v} for s, v in enumerate((70.0, 71.0, 72.0))}
    low_vizwiz = {s: {**dict.fromkeys(TASKS, 90.0), "vizwiz": v} for s, v in enumerate((40.0, 41.0, 42.0))}
    verdict = judge(f, {a: high_vizwiz, b: low_vizwiz})
    assert verdict["status"] == REPRODUCED
    assert verdict["paper"] == {"Q-Mamba, 128 queries": 51.03, "Q-Mamba, 729 queries": 49.30}
    t2 = judge(BY_KEY["t2-local"], {})
    assert t2["paper"]["Local"] == pytest.approx(sum(PAPER["table2"]["Local"][t] for t in FIVE) / 5)


def test_diminishing_returns_on_paired_seeds():
    f = BY_KEY["queries-diminishing"]
    q128, q256, q512 = ("table1", "qmamba-128"), ("table1", "qmamba-256"), ("table1", "qmamba-512")
    # per seed: gains (10, 2), (12, 1), (11, 3) -> differences 8, 11, 8: mean 9, interval above 0
    results = {q128: flat(50, 50, 50), q256: flat(60, 62, 61), q512: flat(62, 63, 64)}
    verdict = judge(f, results)
    assert verdict["status"] == REPRODUCED
    assert verdict["ours"]["gain_difference"]["mean"] == pytest.approx(9.0)
    results[q512] = flat(75, 77, 76)  # second gain 15 each: differences -5, -3, -4
    assert judge(f, results)["status"] == NOT_REPRODUCED
    results[q512] = flat(70, 62, 72)  # differences 0, 12, 0: the interval contains 0
    assert judge(f, results)["status"] == INCONCLUSIVE


def test_missing_task_score_leaves_the_seed_out():
    f = BY_KEY["t3-trained"]
    a, b = ("table3", "trained"), ("table3", "scratch")
    with_gap = {**flat(80, 82), 2: {**dict.fromkeys(TASKS, 0.0), "gqa": None}}
    verdict = judge(f, {a: with_gap, b: flat(50, 52)})
    assert verdict["ours"]["table3/trained"]["n"] == 2 and verdict["status"] == REPRODUCED
