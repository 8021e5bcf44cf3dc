"""The paper's findings as checks on our cells, each with a status and the numbers that decide it.

A finding compares per-seed scores: a cell's score at a seed is the mean of the finding's tasks. Two kinds:

    greater       "a > b": the 95% intervals of a and b over seeds; reproduced when a's lies wholly above
                  b's, not reproduced when wholly below, inconclusive when they overlap (``stats.compare``)
    diminishing   "the first gain exceeds the second": per seed, (b - a) - (c - b) over cells a, b, c; its
                  interval must exclude 0 above (``stats.sign_of``); seeds missing a cell are left out

A finding whose cells have no results yet has the status "not run".
"""

from __future__ import annotations

from dataclasses import dataclass

from qmamba.eval.report import TASK_ORDER
from qmamba.replicate.paper import FIVE, PAPER
from qmamba.replicate.stats import INCONCLUSIVE, compare, mean_ci, sign_of

SIX = TASK_ORDER
RISING = ("vqav2", "gqa", "textvqa", "mmbench")  # the benchmarks the paper says gain from more queries
NOT_RUN = "not run"

Ref = tuple[str, str]  # (experiment, variant)
Results = dict[Ref, dict[int, dict[str, float | None]]]  # (experiment, variant) -> seed -> task -> score


@dataclass(frozen=True)
class Finding:
    key: str
    claim: str  # the paper's statement, in a few words
    kind: str  # greater | diminishing
    cells: tuple[Ref, ...]  # greater: (a, b); diminishing: (a, b, c)
    tasks: tuple[str, ...]
    paper_rows: tuple[str, ...] = ()  # the paper's rows for the same cells (same experiment), for its figures


FINDINGS: tuple[Finding, ...] = (
    Finding("t1-cobra", "Q-Mamba (729/729 queries) outperforms Cobra", "greater",
            (("table1", "qmamba-729"), ("table1", "cobra")), SIX, ("Q-Mamba, 729 queries", "Cobra*")),
    Finding("t1-vlmamba", "Q-Mamba (729/729 queries) outperforms VL-Mamba", "greater",
            (("table1", "qmamba-729"), ("table1", "vlmamba-bsm")), SIX, ("Q-Mamba, 729 queries", "VL-Mamba*")),
    Finding("t1-vlmamba-forward", "VL-Mamba loses accuracy when evaluated with its forward scan only", "greater",
            (("table1", "vlmamba-bsm"), ("table1", "vlmamba-bsm-forward")), SIX,
            ("VL-Mamba*", "VL-Mamba + forward scan only")),
    Finding("t1-vlmamba-backward", "VL-Mamba loses accuracy when evaluated with its backward scan only", "greater",
            (("table1", "vlmamba-bsm"), ("table1", "vlmamba-bsm-backward")), SIX,
            ("VL-Mamba*", "VL-Mamba + backward scan only")),
    Finding("queries-256", "more queries help: 256 > 128", "greater",
            (("table1", "qmamba-256"), ("table1", "qmamba-128")), RISING,
            ("Q-Mamba, 256 queries", "Q-Mamba, 128 queries")),
    Finding("queries-729", "more queries keep helping: 729 > 256", "greater",
            (("table1", "qmamba-729"), ("table1", "qmamba-256")), RISING,
            ("Q-Mamba, 729 queries", "Q-Mamba, 256 queries")),
    Finding("queries-diminishing", "diminishing returns: the gain 128 -> 256 exceeds 256 -> 512", "diminishing",
            (("table1", "qmamba-128"), ("table1", "qmamba-256"), ("table1", "qmamba-512")), RISING,
            ("Q-Mamba, 128 queries", "Q-Mamba, 256 queries", "Q-Mamba, 512 queries")),
    Finding("queries-vizwiz", "VizWiz moves the other way: 128 queries > 729", "greater",
            (("table1", "qmamba-128"), ("table1", "qmamba-729")), ("vizwiz",),
            ("Q-Mamba, 128 queries", "Q-Mamba, 729 queries")),
    Finding("queries-pope", "POPE moves the other way: 128 queries > 729", "greater",
            (("table1", "qmamba-128"), ("table1", "qmamba-729")), ("pope",),
            ("Q-Mamba, 128 queries", "Q-Mamba, 729 queries")),
    Finding("t2-local", "local cross-attention outperforms global", "greater",
            (("table2", "local"), ("table2", "global")), FIVE, ("Local", "Global")),
    Finding("t3-trained", "preprocessing from a trained VL-Mamba beats preprocessing from scratch", "greater",
            (("table3", "trained"), ("table3", "scratch")), FIVE, ("From Trained", "From Scratch")),
    Finding("t4-forward", "a forward-only scan at inference does not lower accuracy (>= bidirectional)", "greater",
            (("table4", "forward"), ("table4", "bidirectional")), FIVE, ("Forward Only", "Bidirectional")),
)


def seed_means(results: Results, ref: Ref, tasks: tuple[str, ...]) -> dict[int, float]:
    """seed -> mean of ``tasks`` for cell ``ref`` (seeds missing a task's score are left out)."""
    out = {}
    for seed, scores in results.get(ref, {}).items():
        values = [scores.get(t) for t in tasks]
        if all(v is not None for v in values):
            out[seed] = sum(values) / len(values)
    return out


def paper_value(f: Finding, row: str) -> float | None:
    table = PAPER.get(f.cells[0][0], {})
    if row not in table or any(t not in table[row] for t in f.tasks):
        return None
    return sum(table[row][t] for t in f.tasks) / len(f.tasks)


def judge(f: Finding, results: Results) -> dict:
    """{"key", "claim", "status", "ours": {...}, "paper": {...}, "decides": text} for finding ``f``."""
    per_cell = [seed_means(results, ref, f.tasks) for ref in f.cells]
    names = ["/".join(ref) for ref in f.cells]
    paper = {row: paper_value(f, row) for row in f.paper_rows}
    out = {"key": f.key, "claim": f.claim, "kind": f.kind, "tasks": list(f.tasks), "paper": paper}
    if any(not values for values in per_cell):
        return {**out, "status": NOT_RUN, "ours": {}, "decides": "missing: " + ", ".join(
            n for n, values in zip(names, per_cell) if not values)}
    intervals = [mean_ci(list(values.values())) for values in per_cell]
    ours = {n: iv.to_dict() for n, iv in zip(names, intervals)}
    if f.kind == "greater":
        status = compare(intervals[0], intervals[1])
        decides = f"{names[0]} {intervals[0].text(2)} vs {names[1]} {intervals[1].text(2)}"
    else:
        seeds = sorted(set.intersection(*(set(v) for v in per_cell)))
        a, b, c = ([v[s] for s in seeds] for v in per_cell)
        diff = mean_ci([(y - x) - (z - y) for x, y, z in zip(a, b, c)])
        ours["gain_difference"] = diff.to_dict()
        status = sign_of(diff) if seeds else INCONCLUSIVE
        decides = f"(gain 1) - (gain 2) per seed = {diff.text(2)} over {len(seeds)} paired seed(s)"
    return {**out, "status": status, "ours": ours, "decides": decides}


def judge_all(results: Results) -> list[dict]:
    return [judge(f, results) for f in FINDINGS]
