"""What every benchmark shares: the ``EvalItem`` record, LLaVA-1.5's prompt suffixes, LLaVA question
JSONL, and ``TaskSpec``, the record each benchmark module fills in.

Prompts are the user message LLaVA-1.5 sends, without the chat template and without the image
placeholder: the runner prepends ``<image>\\n`` and applies the model's template (docs/scoring.md,
section "Inference protocol").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError, EvalOptionError
from qmamba.eval.io import require_fields, write_jsonl
from qmamba.eval.tasks.matching import read_prediction_records

# LLaVA's docs/Evaluation.md and lmms-eval's task yamls (docs/scoring.md, section "Inference protocol")
SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
VIZWIZ_SUFFIX = "\nWhen the provided information is insufficient, respond with 'Unanswerable'." + SHORT_ANSWER_SUFFIX
MMBENCH_SUFFIX = "\nAnswer with the option's letter from the given choices directly."

LLAVA_FORMAT = "LLaVA question JSONL: one {\"question_id\", \"image\", \"text\"[, \"category\"]} per line"


@dataclass
class EvalItem:
    """One question to ask a model.

    question_id: the id its answer line carries (unique within a questions file).
    image: file name relative to the task's image folder, or None (MMBench: the image is in meta).
    question: the bare question; prompt: the full user message (suffixes included, no ``<image>``).
    meta: whatever the task's scorer or results writer needs (answer, category, split, ...).
    """

    question_id: int | str
    image: str | None
    question: str
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict)


def answer_record(item: EvalItem, text: str, model_id: str = "") -> dict[str, Any]:
    """One line of a predictions JSONL, in LLaVA's answer-file format (llava/eval/model_vqa_loader.py)."""
    return {"question_id": item.question_id, "prompt": item.prompt, "text": text, "model_id": model_id, "metadata": {}}


def llava_items(path: str | Path, records: list[Any]) -> list[EvalItem]:
    """LLaVA ``llava_*.jsonl`` records -> items; ``text`` already holds the full prompt (suffix included)."""
    require_fields(path, records, ("question_id", "text"), LLAVA_FORMAT)
    items = []
    for rec in records:
        meta = {k: v for k, v in rec.items() if k not in ("question_id", "image", "text")}
        items.append(EvalItem(rec["question_id"], rec.get("image"), rec["text"].split("\n")[0], rec["text"], meta))
    return items


def check_unique_ids(path: str | Path, items: list[EvalItem], with_prompt: bool = False) -> list[EvalItem]:
    """Answers are keyed by question_id (and, ``with_prompt``, by prompt too: LLaVA's TextVQA file uses the
    image id as question_id), so two items with one key would overwrite each other."""
    seen: set[str] = set()
    for item in items:
        key = json.dumps([item.question_id, item.prompt if with_prompt else None])
        if key in seen:
            what = "question_id and prompt" if with_prompt else "question_id"
            raise EvalFileError(f"{path}: {what} {item.question_id!r} occurs twice; they must be unique")
        seen.add(key)
    return items


# (annotation paths, predictions path, prediction records, questions path or None, resolved options)
#   -> (metrics, per-question rows, counts)
ScoreFiles = Callable[[list[Path], Path, list[dict[str, Any]], Path | None, dict[str, str]], tuple]


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark: how to load its questions, write its results file and score a predictions file.

    ``main_metric`` is the key of ``metrics`` the report shows. ``options``: the scoring options the task
    takes, each with its allowed values, the first the default. ``score_files`` reads the annotations,
    matches the predictions and calls the benchmark's scorer.
    """

    name: str
    load_items: Callable[..., list[EvalItem]]
    write_results: Callable[[list[dict[str, Any]], list[EvalItem], Path], Path]
    results_filename: str
    main_metric: str
    score_files: ScoreFiles
    options: dict[str, tuple[str, ...]]
    max_new_tokens: int = 128  # LLaVA model_vqa_loader.py default; MMBench 1024 (model_vqa_mmbench.py)

    def resolve_options(self, options: dict[str, Any]) -> dict[str, str]:
        """Fill defaults; reject unknown options and values with the allowed ones."""
        unknown = [k for k in options if k not in self.options]
        if unknown:
            raise EvalOptionError(f"task {self.name!r} takes no option(s) {unknown}; it takes {sorted(self.options)}")
        resolved = {k: (options.get(k) or values[0]) for k, values in self.options.items()}
        for key, value in resolved.items():
            if value not in self.options[key]:
                raise EvalOptionError(f"task {self.name!r}: {key}={value!r} is not one of {self.options[key]}")
        return resolved

    def score(self, annotations: list[str | Path] | str | Path, predictions: str | Path,
              questions: str | Path | None = None, per_question: str | Path | None = None,
              **options: Any) -> dict[str, Any]:
        """Score ``predictions`` against ``annotations``; see ``qmamba.eval.score.score_task``."""
        opts = self.resolve_options(options)
        anns = [Path(annotations)] if isinstance(annotations, (str, Path)) else [Path(a) for a in annotations]
        pred_path = Path(predictions)
        records = read_prediction_records(pred_path)
        metrics, rows, count = self.score_files(anns, pred_path, records, Path(questions) if questions else None,
                                                opts)
        if per_question is not None:
            write_jsonl(per_question, rows)
        return {
            "task": self.name, "main_metric": self.main_metric, "main": metrics[self.main_metric],
            "metrics": metrics, "counts": count, "options": opts,
            "files": {"annotations": [str(a) for a in anns], "predictions": str(pred_path),
                      "questions": str(questions) if questions else None},
        }
