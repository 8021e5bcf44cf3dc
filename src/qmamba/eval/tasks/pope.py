"""POPE: official label files ``coco_pope_{random,popular,adversarial}.json`` or LLaVA ``llava_pope_test.jsonl``.

Label-file ids restart at 1 in every split, so items loaded from label files get the id ``"<split>:<id>"``
(unique across splits; the scorer reads the split back from it). A file's split is its records'
``category`` field, else the word random/popular/adversarial in its file name (spec section 6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError
from qmamba.eval.io import read_json_any, require_fields, write_jsonl
from qmamba.eval.scoring.pope import SPLITS
from qmamba.eval.tasks.common import SHORT_ANSWER_SUFFIX, EvalItem, check_unique_ids, llava_items

LABEL_FORMAT = 'POPE label JSON lines {"question_id", "image", "text", "label"}'


def item_id(split: str, question_id: Any) -> str:
    """``random:17``: a label-file id made unique across splits."""
    return f"{split}:{question_id}"


def parse_item_id(qid: Any) -> tuple[str | None, str]:
    """``"random:17"`` -> ("random", "17"); any other id -> (None, str(id))."""
    text = str(qid)
    split, sep, rest = text.partition(":")
    return (split, rest) if sep and split in SPLITS else (None, text)


def split_of_file(path: str | Path) -> str | None:
    """The split named in a file name (coco_pope_adversarial.json -> adversarial), else None."""
    found = [s for s in SPLITS if s in Path(path).name]
    return found[0] if len(found) == 1 else None


def label_records_by_split(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """A label file -> {split: records in file order}; split from ``category``, else from the file name."""
    records = read_json_any(path, record_keys=("label",))
    if not isinstance(records, list) or not records:
        raise EvalFileError(f"{path}: expected non-empty {LABEL_FORMAT}")
    require_fields(path, records, ("question_id", "label"), LABEL_FORMAT)
    out: dict[str, list[dict[str, Any]]] = {}
    for i, rec in enumerate(records):
        split = rec.get("category") or split_of_file(path)
        if split is None:
            raise EvalFileError(
                f"{path}: record {i} has no 'category' and the file name names no split; rename it "
                f"coco_pope_<split>.json with <split> one of {SPLITS}, or add a 'category' field"
            )
        out.setdefault(split, []).append(rec)
    return out


def load_items(paths: str | Path | list[str | Path]) -> list[EvalItem]:
    """One or more label files (ids ``split:id``), or one LLaVA question JSONL (ids as given)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    items: list[EvalItem] = []
    for path in paths:
        data = read_json_any(path, record_keys=("question_id",))
        if isinstance(data, list) and data and isinstance(data[0], dict) and "label" not in data[0]:
            items += llava_items(path, data)
            continue
        for split, records in label_records_by_split(path).items():
            require_fields(path, records, ("text", "image"), LABEL_FORMAT)
            items += [EvalItem(item_id(split, r["question_id"]), r["image"], r["text"], r["text"] + SHORT_ANSWER_SUFFIX,
                               {"category": split, "label": r["label"]}) for r in records]
    return check_unique_ids(paths[0], items)


def write_results(answers: list[dict[str, Any]], items: list[EvalItem], path: str | Path) -> Path:
    """POPE answers JSONL ``{"question_id", "text"[, "category"]}`` in the order of the items."""
    category = {str(it.question_id): it.meta.get("category") for it in items}
    order = {str(it.question_id): i for i, it in enumerate(items)}
    ordered = sorted(answers, key=lambda a: order.get(str(a["question_id"]), len(order)))
    records = []
    for a in ordered:
        rec = {"question_id": a["question_id"], "text": a["text"]}
        if category.get(str(a["question_id"])):
            rec["category"] = category[str(a["question_id"])]
        records.append(rec)
    return write_jsonl(path, records)
