"""TextVQA: official ``TextVQA_0.5.1_val.json`` or LLaVA ``llava_textvqa_val_v051_ocr.jsonl`` (spec 5).

LLaVA's prompt has three lines: question, ``Reference OCR token: <tokens>``, the short-answer suffix.
The OCR tokens come from a record's ``ocr_tokens`` field or from ``ocr_file`` (TextVQA Rosetta OCR JSON
``{"data": [{"image_id", "ocr_tokens"}]}`` or a plain ``{image_id: [tokens]}``); with no tokens for a
question the line is left out. LLaVA's token file is not public (spec section 8), so the joining here,
``", ".join(tokens)``, is our choice: for exact parity use LLaVA's JSONL, whose text is used verbatim.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError
from qmamba.eval.io import read_json_any, require_fields, write_json
from qmamba.eval.scoring.textvqa import OCR_LINE
from qmamba.eval.tasks.common import SHORT_ANSWER_SUFFIX, EvalItem, check_unique_ids, llava_items

OFFICIAL_FORMAT = 'TextVQA JSON {"data": [{"question_id", "image_id", "question", "answers"}]}'


def build_prompt(question: str, ocr_tokens: list[str] | None) -> str:
    """``question[\\nReference OCR token: t1, t2]\\nAnswer the question using a single word or phrase.``"""
    ocr = f"\n{OCR_LINE}{', '.join(ocr_tokens)}" if ocr_tokens else ""
    return question + ocr + SHORT_ANSWER_SUFFIX


def _ocr_map(ocr_file: str | Path | None) -> dict[str, list[str]]:
    if ocr_file is None:
        return {}
    data = read_json_any(ocr_file)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        expected = 'OCR JSON {"data": [{"image_id", "ocr_tokens"}]}'
        require_fields(ocr_file, data["data"], ("image_id", "ocr_tokens"), expected)
        return {str(r["image_id"]): r["ocr_tokens"] for r in data["data"]}
    if isinstance(data, dict):
        return {str(k): v for k, v in data.items()}
    raise EvalFileError(f"{ocr_file}: expected {{'data': [{{image_id, ocr_tokens}}]}} or {{image_id: [tokens]}}")


def load_items(path: str | Path, ocr_file: str | Path | None = None, use_ocr: bool = True) -> list[EvalItem]:
    """Questions -> items (ids: official question ids; LLaVA files keep their ids, which are image ids)."""
    data = read_json_any(path)
    if isinstance(data, list):  # LLaVA's file: question_id holds the image id, shared by its questions
        return check_unique_ids(path, llava_items(path, data), with_prompt=True)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise EvalFileError(f"{path}: no 'data' list; expected the {OFFICIAL_FORMAT} or LLaVA JSONL")
    records = data["data"]
    require_fields(path, records, ("question_id", "image_id", "question"), OFFICIAL_FORMAT)
    ocr = _ocr_map(ocr_file)
    items = []
    for r in records:
        tokens = (r.get("ocr_tokens") or ocr.get(str(r["image_id"]))) if use_ocr else None
        items.append(EvalItem(r["question_id"], f"{r['image_id']}.jpg", r["question"],
                              build_prompt(r["question"], tokens), {"image_id": r["image_id"]}))
    return check_unique_ids(path, items)


def write_results(answers: list[dict[str, Any]], items: list[EvalItem], path: str | Path) -> Path:
    """``[{"question_id", "answer", "prompt"}]``; the prompt lets LLaVA-style (image_id) ids be matched."""
    prompt_of = {str(it.question_id): it.prompt for it in items}
    records = [{"question_id": a["question_id"], "answer": a["text"],
                "prompt": a.get("prompt", prompt_of.get(str(a["question_id"])))} for a in answers]
    return write_json(path, records)
