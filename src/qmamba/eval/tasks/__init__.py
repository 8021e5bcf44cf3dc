"""The six benchmarks, one module each: its questions and prompt, its results file, its scorer, and the
adapter that scores an official or LLaVA predictions file against its official annotations.

``TASKS[name]`` is a ``TaskSpec``; the runner calls ``load_items`` then, after generation,
``write_results(answers, items, out_dir / results_filename)`` and ``score(...)`` (= ``score_task``).
Shared by all six: ``common`` (items, prompt suffixes, ``TaskSpec``), ``matching`` (reading and
matching predictions files), ``metrics`` (the arithmetic of the official scripts).
"""

from __future__ import annotations

from qmamba.eval.tasks import gqa, mmbench, pope, textvqa, vizwiz, vqav2
from qmamba.eval.tasks.common import EvalItem, TaskSpec, answer_record

__all__ = ["TASKS", "EvalItem", "TaskSpec", "answer_record"]

TASKS: dict[str, TaskSpec] = {m.TASK.name: m.TASK for m in (vqav2, gqa, vizwiz, textvqa, pope, mmbench)}
