"""What every task shares: the ``EvalItem`` record, LLaVA-1.5's prompt suffixes, LLaVA question JSONL.

Prompts are the user message LLaVA-1.5 sends, without the chat template and without the image
placeholder: the runner prepends ``<image>\\n`` and applies the model's template (spec section 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError
from qmamba.eval.io import require_fields

# docs/Evaluation.md + lmms-eval yamls (spec section 1)
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
