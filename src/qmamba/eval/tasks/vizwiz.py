"""VizWiz-VQA: official ``val.json``/``test.json`` or LLaVA ``llava_{val,test}.jsonl`` (spec 4).

Official records have no question id: the image file name is used as ``question_id`` (it is unique and
it is the key of the official results format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError
from qmamba.eval.io import read_json_any, require_fields, write_json
from qmamba.eval.tasks.common import VIZWIZ_SUFFIX, EvalItem, check_unique_ids, llava_items

OFFICIAL_FORMAT = 'VizWiz JSON [{"image", "question"[, "answers", "answerable", "answer_type"]}]'


def load_items(path: str | Path) -> list[EvalItem]:
    """Questions -> items; prompt = question + the unanswerable instruction + the short-answer suffix."""
    data = read_json_any(path)
    if not isinstance(data, list) or not data:
        raise EvalFileError(f"{path}: expected a non-empty {OFFICIAL_FORMAT} or LLaVA JSONL")
    if "question_id" in data[0]:
        return check_unique_ids(path, llava_items(path, data))
    require_fields(path, data, ("image", "question"), OFFICIAL_FORMAT)
    items = [
        EvalItem(rec["image"], rec["image"], rec["question"], rec["question"] + VIZWIZ_SUFFIX,
                 {k: rec[k] for k in ("answerable", "answer_type") if k in rec})
        for rec in data
    ]
    return check_unique_ids(path, items)


def write_results(answers: list[dict[str, Any]], items: list[EvalItem], path: str | Path) -> Path:
    """The official results format ``[{"image", "answer"}]`` with raw answers (the scorer's pipeline processes)."""
    image_of = {str(it.question_id): it.image for it in items}
    missing = [a["question_id"] for a in answers if str(a["question_id"]) not in image_of]
    if missing:
        raise EvalFileError(f"answers for {len(missing)} question ids not among the items, e.g. {missing[:3]}")
    return write_json(path, [{"image": image_of[str(a["question_id"])], "answer": a["text"]} for a in answers])
