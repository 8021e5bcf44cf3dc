"""GQA: official ``testdev_balanced_questions.json`` or LLaVA ``llava_gqa_testdev_balanced.jsonl`` (spec 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError
from qmamba.eval.io import read_json_any, write_json
from qmamba.eval.scoring.gqa import llava_convert
from qmamba.eval.tasks.common import SHORT_ANSWER_SUFFIX, EvalItem, check_unique_ids, llava_items

OFFICIAL_FORMAT = 'GQA questions JSON {"<questionId>": {"question", "imageId", "answer", "isBalanced", "types"}}'


def load_items(path: str | Path) -> list[EvalItem]:
    """Questions -> items; images ``<imageId>.jpg``; prompt = question + the short-answer suffix."""
    data = read_json_any(path)
    if isinstance(data, list):
        return check_unique_ids(path, llava_items(path, data))
    if not isinstance(data, dict):
        raise EvalFileError(f"{path}: expected the {OFFICIAL_FORMAT} or LLaVA JSONL")
    items = []
    for qid, q in data.items():
        if not isinstance(q, dict) or "question" not in q or "imageId" not in q:
            raise EvalFileError(f"{path}: entry {qid!r} lacks 'question' or 'imageId'; expected the {OFFICIAL_FORMAT}")
        meta = {"answer": q.get("answer"), "isBalanced": q.get("isBalanced"),
                "structural": q.get("types", {}).get("structural")}
        items.append(EvalItem(qid, f"{q['imageId']}.jpg", q["question"], q["question"] + SHORT_ANSWER_SUFFIX, meta))
    return items


def write_results(answers: list[dict[str, Any]], items: list[EvalItem], path: str | Path) -> Path:
    """``testdev_balanced_predictions.json``: ``[{"questionId", "prediction"}]`` after LLaVA's conversion."""
    records = [{"questionId": a["question_id"], "prediction": llava_convert(a["text"])} for a in answers]
    return write_json(path, records)
