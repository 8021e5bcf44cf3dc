"""VQAv2: official ``v2_OpenEnded_mscoco_*_questions.json`` or LLaVA ``llava_vqav2_*.jsonl`` (spec 2.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError
from qmamba.eval.io import read_json_any, require_fields, write_json
from qmamba.eval.tasks.common import SHORT_ANSWER_SUFFIX, EvalItem, check_unique_ids, llava_items

OFFICIAL_FORMAT = 'official questions JSON {"data_subtype", "questions": [{"image_id", "question", "question_id"}]}'


def image_name(data_subtype: str, image_id: int) -> str | None:
    """``COCO_<subtype>_<image_id:012d>.jpg``; test-dev images are the test2015 files (vqaEvalDemo.py, vqav2.sh)."""
    if not data_subtype:
        return None
    folder = "test2015" if data_subtype.startswith("test") else data_subtype
    return f"COCO_{folder}_{int(image_id):012d}.jpg"


def load_items(path: str | Path) -> list[EvalItem]:
    """Questions -> items with prompt = question + the short-answer suffix (LLaVA files: their text)."""
    data = read_json_any(path)
    if isinstance(data, list):
        return check_unique_ids(path, llava_items(path, data))
    if not isinstance(data, dict) or "questions" not in data:
        raise EvalFileError(f"{path}: no 'questions' list; expected the {OFFICIAL_FORMAT} or LLaVA JSONL")
    questions = data["questions"]
    require_fields(path, questions, ("image_id", "question", "question_id"), OFFICIAL_FORMAT)
    subtype = data.get("data_subtype", "")
    items = [
        EvalItem(q["question_id"], image_name(subtype, q["image_id"]), q["question"],
                 q["question"] + SHORT_ANSWER_SUFFIX, {"image_id": q["image_id"]})
        for q in questions
    ]
    return check_unique_ids(path, items)


def write_results(answers: list[dict[str, Any]], items: list[EvalItem], path: str | Path) -> Path:
    """The official results format ``[{"question_id", "answer"}]`` with the raw model answers.

    Score it with pipeline='llava' (EvalAI processing applied by the scorer); for the EvalAI upload use
    ``qmamba.eval.submission.vqav2_testdev`` (all test ids, processed answers).
    """
    return write_json(path, [{"question_id": a["question_id"], "answer": a["text"]} for a in answers])
