"""The six benchmarks: how to load their questions, write their results files and score them.

``TASKS[name]`` is a ``TaskSpec``; the runner calls ``load_items`` then, after generation,
``write_results(answers, items, out_dir / results_filename)`` and ``score(...)`` (= ``score_task``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmamba.eval.tasks import gqa, mmbench, pope, textvqa, vizwiz, vqav2
from qmamba.eval.tasks.common import EvalItem, answer_record

__all__ = ["TASKS", "EvalItem", "TaskSpec", "answer_record"]


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark. ``main_metric`` is the key of ``metrics`` the report shows."""

    name: str
    load_items: Callable[..., list[EvalItem]]
    write_results: Callable[[list[dict[str, Any]], list[EvalItem], Path], Path]
    results_filename: str
    main_metric: str
    max_new_tokens: int = 128  # LLaVA model_vqa_loader.py default; MMBench 1024 (model_vqa_mmbench.py)

    def score(self, annotations: list[str | Path], predictions: str | Path, questions: str | Path | None = None,
              per_question: str | Path | None = None, **options: Any) -> dict[str, Any]:
        from qmamba.eval.score import score_task

        return score_task(self.name, annotations, predictions, questions, per_question, **options)


TASKS: dict[str, TaskSpec] = {
    "vqav2": TaskSpec("vqav2", vqav2.load_items, vqav2.write_results, "results.json", "overall"),
    "gqa": TaskSpec("gqa", gqa.load_items, gqa.write_results, "testdev_balanced_predictions.json", "accuracy"),
    "vizwiz": TaskSpec("vizwiz", vizwiz.load_items, vizwiz.write_results, "results.json", "overall"),
    "textvqa": TaskSpec("textvqa", textvqa.load_items, textvqa.write_results, "results.json", "accuracy"),
    "pope": TaskSpec("pope", pope.load_items, pope.write_results, "results.jsonl", "f1_mean_of_splits"),
    "mmbench": TaskSpec("mmbench", mmbench.load_items, mmbench.write_results, "results.tsv", "overall", 1024),
}
