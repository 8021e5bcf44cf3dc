"""A markdown table of main metrics across tasks and runs, with the Q-Mamba paper's Table 1 alongside.

Layout read: ``<run_dir>/<task>/metrics.json`` as written from ``score_task``'s result (the task is taken
from the file's ``"task"`` field, the score from ``"main"``; an optional ``"model"`` field names the row,
else the run directory's name does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError

TASK_ORDER = ("vqav2", "gqa", "vizwiz", "textvqa", "pope", "mmbench")
COLUMNS = {"vqav2": "VQAv2", "gqa": "GQA", "vizwiz": "VizWiz", "textvqa": "TextVQA", "pope": "POPE", "mmbench": "MMB"}

# Q-Mamba paper Table 1, as printed, in TASK_ORDER. "*": reproduced by the paper's authors in their codebase
# (escaped when the table is written, as the paper rows are in italics).
PAPER_TABLE1 = {
    "Cobra*": ("75.38", "58.16", "49.22", "44.9", "87.6", "56.2"),
    "VL-Mamba*": ("74.38", "56.69", "51.66", "48.7", "83.9", "57.0"),
    "Q-Mamba, 128 queries": ("74.51", "57.59", "51.03", "47.1", "87.9", "57.2"),
    "Q-Mamba, 256 queries": ("75.01", "58.10", "50.53", "48.8", "86.9", "57.7"),
    "Q-Mamba, 512 queries": ("75.42", "58.37", "48.90", "50.2", "86.5", "57.6"),
    "Q-Mamba, 729 queries": ("75.62", "58.33", "49.30", "51.2", "86.8", "58.0"),
}

NOTES = (
    "Scores in percent. VQAv2 overall accuracy (the paper: test-dev on EvalAI; locally: whichever annotations "
    "were scored); GQA testdev-balanced accuracy; VizWiz overall accuracy; TextVQA val accuracy (LLaVA m4c); "
    "POPE: mean of the per-split F1 (how the paper combines splits is not documented); MMB: MMBench dev "
    "CircularEval overall.",
    r"\*: reproduced by the paper's authors in their codebase.",
)
INCOMPLETE_NOTE = "† incomplete: some questions had no answer (see counts.n_missing in that metrics.json)."


def save_metrics(result: dict[str, Any], run_dir: str | Path, model: str | None = None) -> Path:
    """Write ``score_task``'s result (plus ``"model"`` when given) to ``<run_dir>/<task>/metrics.json``."""
    path = Path(run_dir) / result["task"] / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**result, "model": model} if model else result
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_run(run_dir: str | Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """(row name, {task: metrics.json content}) for one run directory."""
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("*/metrics.json"))
    if not files:
        raise EvalFileError(f"{run_dir}: no <task>/metrics.json files; score a task into <run_dir>/<task>/ first")
    by_task: dict[str, dict[str, Any]] = {}
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "task" not in data or "main" not in data:
            raise EvalFileError(f"{path}: expected score_task's result with 'task' and 'main' fields")
        by_task[data["task"]] = data
    names = {d["model"] for d in by_task.values() if d.get("model")}
    return (names.pop() if len(names) == 1 else run_dir.name), by_task


def _incomplete(result: dict[str, Any] | None) -> bool:
    return result is not None and result.get("main") is not None and not result.get("counts", {}).get("complete", True)


def _cell(result: dict[str, Any] | None) -> str:
    if result is None or result.get("main") is None:
        return "–"
    return f"{result['main']:.2f}" + (" †" if _incomplete(result) else "")


def _escape(text: str) -> str:
    """``text`` with its asterisks shown as asterisks by markdown, not read as emphasis."""
    return text.replace("*", r"\*")


def write_report(run_dirs: list[str | Path]) -> str:
    """Markdown: one row per run, then the paper's rows (in italics, their own "*" escaped), then the notes
    (the † note only when a cell carries a †)."""
    header = "| model | " + " | ".join(COLUMNS[t] for t in TASK_ORDER) + " |"
    lines = [header, "|" + " --- |" * (len(TASK_ORDER) + 1)]
    incomplete = False
    for run_dir in run_dirs:
        name, by_task = load_run(run_dir)
        lines.append(f"| {name} | " + " | ".join(_cell(by_task.get(t)) for t in TASK_ORDER) + " |")
        incomplete = incomplete or any(_incomplete(by_task.get(t)) for t in TASK_ORDER)
    for name, values in PAPER_TABLE1.items():
        lines.append(f"| *{_escape(name)} (paper Table 1)* | " + " | ".join(values) + " |")
    notes = [*NOTES, INCOMPLETE_NOTE] if incomplete else list(NOTES)
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
