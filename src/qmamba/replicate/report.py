"""The replication report: ``report.md``, ``report.json`` and PNG plots from every ``result.json`` under
``<out>/runs``. Per cell and task, the mean and Student-t 95% interval over seeds; Table 1's rows beside the
paper's own; each finding's status (``findings``); Pareto plots of accuracy against visual tokens and, given
``qmamba bench`` JSON, against the full-size preset's time per answer. Where the tier has a held-out drawing
style, each experiment's table has a second one beside it: the same cells scored on images in that style."""

from __future__ import annotations

import json
from pathlib import Path

from qmamba.eval.report import COLUMNS, TASK_ORDER
from qmamba.replicate.backbones import builds_summary
from qmamba.replicate.findings import Results, judge_all, seed_means
from qmamba.replicate.paper import PAPER
from qmamba.replicate.plots import interval_plot, pareto_plot
from qmamba.replicate.registry import TITLES, Cell
from qmamba.replicate.run import RESULT, cell_dir, write_json_atomic
from qmamba.replicate.stats import Interval, mean_ci

DIFFERENCES = (
    "Query counts are the paper's 128/256/512/729 of 729 patches scaled to the tier's patches (rounded).",
    "Q-Mamba's query-block Mamba layers start from scratch: the paper copies them from mamba-130m "
    "(model.mamba_init), and the tier has no pretrained Mamba LM of the query width.",
    "POPE-like F1 counts as 0 where a model never answered yes (recall 0; scores.json marks it).",
    "Cells with the same training share its run, and cells with the same training and inference overrides share "
    "their evaluation (Table 2's local, Table 3's trained and Table 1's 256-proportion Q-Mamba are one run).",
)
MODEL_SUPPORT = (
    "Q-Former's preprocessing connector starts from scratch in every cell: initialising it from a trained "
    "VL-Mamba (model.preprocess_init) is implemented for the qmamba connector only (needs model support).",
)


def load_results(out: Path, cells: list[Cell], seeds: list[int], heldout: bool = False) -> Results:
    """(experiment, variant) -> seed -> {task: score} for every finished run of ``cells`` at ``seeds``;
    ``heldout``: the scores in the held-out style instead (runs without them are left out)."""
    results: Results = {}
    for cell in cells:
        for seed in seeds:
            path = cell_dir(out, cell, seed) / RESULT
            if path.is_file():
                data = json.loads(path.read_text())
                scores = data.get("heldout", {}).get("scores") if heldout else data["scores"]
                if scores is not None:
                    results.setdefault((cell.experiment, cell.variant), {})[seed] = scores
    return results


def load_backbones(out: Path, cells: list[Cell], seeds: list[int]) -> list[dict | None]:
    """Each finished run's "backbones" record (None for runs recorded without one)."""
    paths = [cell_dir(out, c, s) / RESULT for c in cells for s in seeds]
    return [json.loads(p.read_text()).get("backbones") for p in paths if p.is_file()]


def bench_latency(bench: dict | None, preset: str | None) -> float | None:
    """The full-size preset's time per answer at batch 1 (ms) in ``qmamba bench`` JSON, if it is there."""
    figures = (bench or {}).get("vqa", {}).get(preset or "", {})
    return figures.get("total_ms") if isinstance(figures, dict) else None


def score_summary(per_seed: dict[int, dict]) -> dict:
    """{"seeds", "tasks": {task: interval}, "mean": interval of the per-seed means of the six}."""
    tasks = {t: mean_ci([s.get(t) for s in per_seed.values()]) for t in TASK_ORDER}
    mean = mean_ci(list(seed_means({("c", "c"): per_seed}, ("c", "c"), TASK_ORDER).values()))
    return {"seeds": sorted(per_seed), "tasks": {t: iv.to_dict() for t, iv in tasks.items()}, "mean": mean.to_dict()}


def cell_summary(cell: Cell, per_seed: dict[int, dict], bench: dict | None,
                 heldout: dict[int, dict] | None = None) -> dict:
    """The cell's row: its intervals, the paper's row and the time per answer; ``heldout``: its per-seed
    scores in the held-out style, summarised under "heldout" (absent without them)."""
    summary = score_summary(per_seed)
    row = {"experiment": cell.experiment, "variant": cell.variant, "label": cell.label, "train": cell.train.key,
           "eval": cell.eval_key, "visual_tokens": cell.visual_tokens, "seeds": summary["seeds"],
           "tasks": summary["tasks"], "mean": summary["mean"],
           "paper_row": cell.paper_row, "paper": PAPER.get(cell.experiment, {}).get(cell.paper_row or ""),
           "bench_preset": cell.bench_preset, "latency_ms": bench_latency(bench, cell.bench_preset)}
    if heldout:
        row["heldout"] = score_summary(heldout)
    return row


def _iv(d: dict) -> Interval:
    return Interval(d["mean"], d["ci95"], d["n"])


def experiment_table(rows: list[dict], latency: bool) -> list[str]:
    head = ["variant", "visual tokens", *(COLUMNS[t] for t in TASK_ORDER), "mean", "seeds"]
    head += ["ms/answer (full size)"] if latency else []
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["label"], str(r["visual_tokens"]), *(_iv(r["tasks"][t]).text() for t in TASK_ORDER),
                 _iv(r["mean"]).text(), str(len(r["seeds"]))]
        cells += ["" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"] if latency else []
        lines.append("| " + " | ".join(cells) + " |")
        if r["paper"]:
            paper = [r["paper"].get(t) for t in TASK_ORDER]
            lines.append("| " + " | ".join([f"*paper: {r['paper_row']}*".replace("**", r"\**"), "",
                                             *("" if v is None else f"*{v:g}*" for v in paper), "", ""]
                                            + ([""] if latency else [])) + " |")
    return lines


def findings_table(findings: list[dict]) -> list[str]:
    lines = ["| finding (the paper's claim) | status | ours: mean ± 95% CI over seeds | paper |",
             "| --- | --- | --- | --- |"]
    for f in findings:
        paper = " vs ".join("–" if v is None else f"{v:.2f}" for v in f["paper"].values())
        lines.append(f"| {f['claim']} ({', '.join(COLUMNS[t] for t in f['tasks'])}) | **{f['status']}** | "
                     f"{f['decides']} | {paper} |")
    return lines


def draw_plots(out: Path, summaries: dict[str, list[dict]]) -> list[Path]:
    """One interval plot per experiment (mean of the six per cell) and the Pareto plots."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    paths = [interval_plot(plots / f"{e}.png", [(r["label"], _iv(r["mean"])) for r in rows],
                           TITLES[e], "mean of the six micro-benchmarks (95% CI over seeds)")
             for e, rows in summaries.items() if rows]
    seen, points = set(), []
    for r in summaries.get("table1", []) + summaries.get("queries", []):
        if r["eval"] not in seen:
            seen.add(r["eval"])
            points.append((r["label"], r))
    if points:
        paths.append(pareto_plot(plots / "pareto_tokens.png",
                                 [(label, r["visual_tokens"], _iv(r["mean"])) for label, r in points],
                                 "accuracy vs visual tokens", "visual tokens per image", "mean score"))
    timed = [(label, r) for label, r in points if r["latency_ms"] is not None]
    if timed:
        paths.append(pareto_plot(plots / "pareto_latency.png",
                                 [(label, r["latency_ms"], _iv(r["mean"])) for label, r in timed],
                                 "accuracy vs time per answer (full-size preset, qmamba bench)",
                                 "ms per answer", "mean score"))
    return paths


def write_report(out: Path, tier: str, cells: list[Cell], seeds: list[int], bench: dict | None = None,
                 settings: dict | None = None, heldout_style: str | None = None) -> dict:
    """Write ``<out>/report.md``, ``report.json`` and ``plots/*.png`` for ``cells``; returns report.json's data.
    ``settings``: the tier's fields, recorded in report.json. ``heldout_style``: the style the runs were also
    scored in; its scores go beside the in-style ones (each row's "heldout", a second table per experiment)."""
    results = load_results(out, cells, seeds)
    heldout = load_results(out, cells, seeds, heldout=True) if heldout_style else {}
    summaries: dict[str, list[dict]] = {}
    missing = []
    for cell in cells:
        per_seed = results.get((cell.experiment, cell.variant), {})
        if per_seed:
            summaries.setdefault(cell.experiment, []).append(
                cell_summary(cell, per_seed, bench, heldout.get((cell.experiment, cell.variant))))
        missing += [f"{cell.experiment}/{cell.variant}/seed{s}" for s in seeds if s not in per_seed]
    findings = judge_all(results)
    plots = draw_plots(out, summaries)
    data = {"tier": tier, "tier_settings": settings, "seeds": seeds, "cells": summaries, "findings": findings,
            "missing_runs": missing, "backbones": builds_summary(load_backbones(out, cells, seeds)),
            "needs_model_support": list(MODEL_SUPPORT), "differences": list(DIFFERENCES),
            "plots": [str(p.relative_to(out)) for p in plots]}
    if heldout_style:
        data["heldout_style"] = heldout_style
    write_json_atomic(out / "report.json", data)
    (out / "report.md").write_text(render_markdown(data, bench is not None), encoding="utf-8")
    return data


def backbones_lines(builds: list[dict]) -> list[str]:
    """One line per distinct build of the backbones the runs were trained on (fingerprint of the weights)."""
    if not builds:
        return ["No finished runs."]
    lines = [f"The runs were trained on {len(builds)} build(s) of the tier's backbones"
             + (" (same recipe and seed, rebuilt on another machine: scores may differ a little between them)."
                if len(builds) > 1 else ".")]
    for b in builds:
        figures = (b.get("gates") or {}).get("figures", {})
        gates = ", ".join(f"{k} {100 * v:.1f}%" for k, v in figures.items() if isinstance(v, (int, float)))
        lines.append(f"- `{b['fingerprint']}`: {b['runs']} run(s)" + (f"; build gates: {gates}" if gates else ""))
    return lines


def render_markdown(data: dict, latency: bool) -> str:
    lines = [f"# Replication of the Q-Mamba paper's Tables 1-4 on the {data['tier']} micro-world", "",
             f"Seeds {', '.join(map(str, data['seeds']))}. Each cell: mean ± half-width of the Student-t 95% "
             "confidence interval over seeds (no interval with one seed). Scores in percent: VQAv2-, GQA-, "
             "VizWiz-, TextVQA-like accuracy, POPE-like F1 (mean of the three splits), MMBench-like "
             "CircularEval. Paper rows (italics) are the Q-Mamba paper's own numbers on the real benchmarks.",
             *([] if not data.get("tier_settings") else
               ["", "Tier settings: " + ", ".join(f"{k} {v}" for k, v in data["tier_settings"].items()
                                                  if k not in ("name", "missing")) + "."]),
             "", "## Findings", "",
             "reproduced: our intervals separate in the paper's direction; not reproduced: they separate the "
             "other way; inconclusive: they overlap.", "", *findings_table(data["findings"])]
    style = data.get("heldout_style")
    if style:
        lines[2] += (f" Every run is also scored on the same evaluation sets drawn in the held-out style *{style}*"
                     " (never seen in training): the second table of each experiment.")
    for experiment, rows in data["cells"].items():
        lines += ["", f"## {TITLES[experiment]}", "",
                  *experiment_table(rows, latency and experiment in ("table1", "queries")),
                  "", f"![{experiment}](plots/{experiment}.png)"]
        held = [{**r, **r["heldout"], "paper": None} for r in rows if r.get("heldout")]
        if style and held:
            lines += ["", f"Held-out style *{style}* (the same models, evaluation images drawn in a style never "
                      "seen in training):", "", *experiment_table(held, False)]
    if "plots/pareto_tokens.png" in data["plots"]:
        lines += ["", "## Pareto: accuracy vs visual tokens", "", "![pareto](plots/pareto_tokens.png)"]
    if "plots/pareto_latency.png" in data["plots"]:
        lines += ["", "![pareto latency](plots/pareto_latency.png)"]
    elif not latency:
        lines += ["", "Latency: pass `--bench-json` (from `qmamba bench --only vqa --presets all --out F`) "
                  "to fill the time per answer."]
    lines += ["", "## Backbones", "", *backbones_lines(data.get("backbones", []))]
    lines += ["", "## Differences from the paper's setup", "", *(f"- {m}" for m in data["differences"])]
    lines += ["", "## Needs model support", "", *(f"- {m}" for m in data["needs_model_support"])]
    if data["missing_runs"]:
        lines += ["", "## Runs not finished yet", "", ", ".join(data["missing_runs"])]
    return "\n".join(lines) + "\n"
