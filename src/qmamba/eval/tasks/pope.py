"""POPE: its questions, its results file, and its yes/no metrics as RUCAIBox/POPE ``evaluate.py`` ==
LLaVA ``llava/eval/eval_pope.py`` (docs/scoring.md, section "POPE").

Questions: official label files ``coco_pope_{random,popular,adversarial}.json`` or LLaVA
``llava_pope_test.jsonl``. Label-file ids restart at 1 in every split, so items loaded from label files get
the id ``"<split>:<id>"`` (unique across splits; the scorer reads the split back from it). A file's split
is its records' ``category`` field, else the word random/popular/adversarial in its file name.

Parsing is case-sensitive, as the original: only the words ``No``, ``no`` and ``not`` (after keeping the
text before the first '.', deleting ',' and splitting on single spaces) make a "no"; "NO", "Not", "No!",
"no;" and "no\\n" all parse as "yes". Labels: "no" -> negative, anything else -> positive.
Metrics here are in percent (the scripts print fractions with %.3f); where the scripts would divide by
zero the value is None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError, PredictionMismatchError
from qmamba.eval.io import read_json_any, require_fields, write_jsonl
from qmamba.eval.tasks.common import SHORT_ANSWER_SUFFIX, EvalItem, TaskSpec, check_unique_ids, llava_items
from qmamba.eval.tasks.matching import check_coverage, counts

SPLITS = ("random", "popular", "adversarial")


# ------------------------------------------------------------------------------------------- questions
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


# --------------------------------------------------------------------------------------------- scoring
def parse_pope_answer(text: str) -> str:
    """evaluate.py: first sentence, commas deleted, split(' '); 'No'/'not'/'no' among the words -> 'no'."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def _ratio(num: int, den: int) -> float | None:
    return 100 * num / den if den else None


def pope_metrics(preds: list[str], labels: list[str]) -> dict[str, Any]:
    """Parsed 'yes'/'no' predictions x labels (positive = yes) -> accuracy, precision, recall, F1, yes-ratio."""
    pos_pred = [p != "no" for p in preds]
    pos_true = [lab != "no" for lab in labels]
    tp = sum(p and t for p, t in zip(pos_pred, pos_true))
    fp = sum(p and not t for p, t in zip(pos_pred, pos_true))
    tn = sum(not p and not t for p, t in zip(pos_pred, pos_true))
    fn = sum(not p and t for p, t in zip(pos_pred, pos_true))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = None
    if precision is not None and recall is not None and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "accuracy": _ratio(tp + tn, len(preds)), "precision": precision, "recall": recall, "f1": f1,
        "yes_ratio": _ratio(sum(pos_pred), len(preds)), "n": len(preds), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }


def _mean(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else sum(values) / len(values)


def score_pope(matched: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``matched``: split -> [{"question_id", "prediction" (raw text), "label"}] in label-file order.

    Metrics: per split, ``overall`` (all splits pooled) and the means of the per-split F1 and accuracy
    (how papers combine the splits is not documented; the report uses ``f1_mean_of_splits``).
    """
    per_split, rows, all_preds, all_labels = {}, [], [], []
    for split, pairs in matched.items():
        preds = [parse_pope_answer(p["prediction"]) for p in pairs]
        labels = [p["label"] for p in pairs]
        per_split[split] = pope_metrics(preds, labels)
        all_preds += preds
        all_labels += labels
        for p, parsed in zip(pairs, preds):
            correct = (parsed == "no") == (p["label"] == "no")
            rows.append({**p, "split": split, "parsed": parsed, "score": 100.0 * correct})
    metrics = {
        "per_split": per_split,
        "overall": pope_metrics(all_preds, all_labels),
        "f1_mean_of_splits": _mean([m["f1"] for m in per_split.values()]),
        "accuracy_mean_of_splits": _mean([m["accuracy"] for m in per_split.values()]),
    }
    return metrics, rows


# -------------------------------------------------------------------------------------- official files


def _pope_labels(anns: list[Path]) -> dict[str, list[dict]]:
    """All label files -> {split: records in file order}; a split given twice raises."""
    if not anns:
        raise EvalFileError("pope: give the label file of every split scored (coco_pope_<split>.json)")
    labels: dict[str, list[dict]] = {}
    for path in anns:
        for split, recs in label_records_by_split(path).items():
            if split in labels:
                raise EvalFileError(f"{path}: split {split!r} was already given by another annotations file")
            labels[split] = recs
    return labels


def _pope_split(i: int, rec: dict, categories: dict[str, str], labels: dict, pred_path: Path) -> tuple[str, str]:
    """(split, id within the split): ``category`` field > ``split:id`` id > questions file > the only split."""
    split, local = parse_item_id(rec["question_id"])
    split = rec.get("category") or split or categories.get(str(rec["question_id"]))
    if split is None and len(labels) == 1:
        split = next(iter(labels))
    if split is None:
        raise EvalFileError(f"{pred_path}: record {i} (question_id {rec['question_id']!r}) names no split; add a "
                            "'category' field, or pass the questions file (llava_pope_test.jsonl) that has one")
    if split not in labels:
        raise PredictionMismatchError(f"{pred_path}: record {i} is for split {split!r} but no label file for it "
                                      f"was given (have {sorted(labels)})")
    return split, local


def _pope_pair(split: str, labels: list[dict], preds: list[dict], pred_path: Path) -> tuple[list, list]:
    """Pair one split's answers with its labels: by id when every id is a label id, else by position as
    LLaVA's eval_pope.py (then the counts must agree, and prompts, when given, must match label texts)."""
    label_ids = [str(r["question_id"]) for r in labels]
    by_id = {p["_local"]: p for p in preds}
    if len(by_id) < len(preds):
        raise PredictionMismatchError(f"{pred_path}: split {split!r} has a question id twice")
    if not preds or set(by_id) <= set(label_ids):
        pairs = [(by_id.get(i), r) for i, r in zip(label_ids, labels)]
    elif len(preds) != len(labels):
        raise PredictionMismatchError(
            f"{pred_path}: split {split!r}: the answers' ids are not the label file's ids, so they are paired with "
            f"labels by position (as LLaVA's eval_pope.py), which needs one answer per label: got {len(preds)} "
            f"answers for {len(labels)} labels")
    else:
        pairs = list(zip(preds, labels))
        for p, r in pairs:
            asked = p.get("prompt", "").split("\n")[0]
            if asked and "text" in r and asked != r["text"]:
                raise PredictionMismatchError(
                    f"{pred_path}: split {split!r}: answer {p['question_id']!r} asks {asked!r} but the label in "
                    f"that position is for {r['text']!r}; answers must follow label-file order")
    rows = [{"question_id": p["question_id"], "label_question_id": r["question_id"], "prediction": p["text"],
             "label": r["label"]} for p, r in pairs if p is not None]
    missing = [item_id(split, r["question_id"]) for p, r in pairs if p is None]
    return rows, missing


def score_files(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """POPE label files (one per split) x answers JSONL."""
    labels = _pope_labels(anns)
    require_fields(pred_path, records, ("question_id", "text"), 'POPE answers JSONL {"question_id", "text"}')
    for i, rec in enumerate(records):
        if not isinstance(rec["text"], str):
            raise EvalFileError(f"{pred_path}: record {i} field 'text' is {rec['text']!r}, expected a string")
    categories = {}
    if questions is not None:
        categories = {str(it.question_id): it.meta.get("category") for it in load_items(questions)}
    by_split: dict[str, list[dict]] = {s: [] for s in labels}
    for i, rec in enumerate(records):
        split, local = _pope_split(i, rec, categories, labels, pred_path)
        by_split[split].append({**rec, "_local": local})
    matched, missing = {}, []
    for split, recs in labels.items():
        rows, miss = _pope_pair(split, recs, by_split[split], pred_path)
        missing += miss
        if rows:
            matched[split] = rows
    n_labels = sum(len(v) for v in labels.values())
    if missing and opts["missing"] == "error":
        check_coverage(pred_path, {}, set(), missing, "the label files", "error")
    metrics, rows = score_pope(matched)
    texts = {str(i): r["text"] for i, r in enumerate(records)}
    return metrics, rows, counts(n_labels, texts, missing, opts["missing"])


TASK = TaskSpec("pope", load_items, write_results, results_filename="results.jsonl",
                main_metric="f1_mean_of_splits", score_files=score_files, options={"missing": ("error", "skip")})
