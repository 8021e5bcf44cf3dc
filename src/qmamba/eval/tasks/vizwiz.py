"""VizWiz-VQA: its questions, its results file, and its accuracy and unanswerability as the VizWiz
VQAEval computes them (docs/scoring.md, section "VizWiz-VQA").

Questions: official ``val.json``/``test.json`` or LLaVA ``llava_{val,test}.jsonl``. Official records have
no question id: the image file name is used as ``question_id`` (it is unique and it is the key of the
official results format).

Only the prediction is normalised (punctuation, digits/articles, VizWiz's U+2019 contractions); the ten GT
answers are compared exactly as stored. ``pipeline='llava'`` (default) first applies EvalAIAnswerProcessor,
as LLaVA's ``scripts/convert_vizwiz_for_submission.py`` does before upload. Unanswerability: average
precision and F1 of "unanswerable" (sklearn average_precision_score / f1_score, reimplemented in metrics.py).
Rounding: ``round(100 * x, 2)`` with Python 3's round (the evaluator is Python 3 code).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError, PredictionMismatchError
from qmamba.eval.io import read_json_any, require_fields, write_json
from qmamba.eval.normalize import VIZWIZ_CONTRACTIONS, clean_whitespace, evalai_process, normalize_answer
from qmamba.eval.tasks.common import VIZWIZ_SUFFIX, EvalItem, TaskSpec, check_unique_ids, llava_items
from qmamba.eval.tasks.matching import MISSING, check_coverage, check_gt_answers, counts, keyed_predictions, only_file
from qmamba.eval.tasks.metrics import average_precision, f1_binary, leave_one_out_accuracy, percent

# ------------------------------------------------------------------------------------------- questions
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


# --------------------------------------------------------------------------------------------- scoring
PIPELINES = ("llava", "official")


def normalize_prediction(raw: str, pipeline: str = "llava") -> str:
    """The prediction as VQAEval compares it (after LLaVA's EvalAI processing when pipeline='llava')."""
    text = evalai_process(raw) if pipeline == "llava" else raw
    return normalize_answer(clean_whitespace(text), VIZWIZ_CONTRACTIONS)


def _r2(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def score_vizwiz(
    annotations: list[dict[str, Any]], predictions: dict[str, str], pipeline: str = "llava", skip_missing: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Annotations (val.json records with answers and answerable) x {image: answer}.

    A missing prediction scores 0 and counts as "answerable" for AP/F1 (or is left out when
    ``skip_missing``). Returns (metrics, rows); metrics: overall, per_answer_type, average_precision, f1.
    """
    accs, gt_unans, pred_unans, rows = [], [], [], []
    by_type: dict[str, list[float]] = {}
    for ann in annotations:
        raw = predictions.get(ann["image"])
        if raw is None and skip_missing:
            continue
        gts = [a["answer"] for a in ann["answers"]]
        compared = None if raw is None else normalize_prediction(raw, pipeline)
        acc = 0.0 if compared is None else leave_one_out_accuracy(compared, gts)
        accs.append(acc)
        by_type.setdefault(ann.get("answer_type", "unknown"), []).append(acc)
        gt_unans.append(1 - int(ann["answerable"]))
        pred_unans.append(1 - int(compared != "unanswerable"))
        rows.append({
            "question_id": ann["image"], "prediction": raw, "compared": compared, "answers": gts,
            "answer_type": ann.get("answer_type"), "answerable": ann["answerable"],
            "score": round(100 * acc, 2), "missing": raw is None,
        })
    metrics = {
        "overall": round(percent(accs), 2) if accs else None,  # round(100 * sum / len, 2) as VQAEval
        "per_answer_type": {k: round(percent(v), 2) for k, v in sorted(by_type.items())},
        "unanswerable_average_precision": _r2(average_precision(gt_unans, pred_unans)) if accs else None,
        "unanswerable_f1": _r2(f1_binary(gt_unans, [p > 0.5 for p in pred_unans])) if accs else None,
    }
    return metrics, rows


# -------------------------------------------------------------------------------------- official files
VIZWIZ_PREDS = 'VizWiz results [{"image", "answer"}] or answers JSONL {"question_id", "text"}'


def _vizwiz_id_map(questions: Path | None, pred_path: Path) -> dict[str, str]:
    """LLaVA question ids -> image names, from a questions JSONL (llava_val.jsonl)."""
    if questions is None:
        raise EvalFileError(
            f"{pred_path}: predictions carry question ids that are not VizWiz image names; pass the questions "
            "file they were made from (e.g. llava_val.jsonl) so ids can be mapped to images")
    records = read_json_any(questions)
    if not isinstance(records, list):
        raise EvalFileError(f"{questions}: expected LLaVA question JSONL {{question_id, image, text}}")
    require_fields(questions, records, ("question_id", "image"), "LLaVA question JSONL {question_id, image, text}")
    return {str(r["question_id"]): r["image"] for r in records}


def score_files(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """VizWiz val.json x predictions keyed by image (or by question id, mapped through ``questions``)."""
    path = only_file("vizwiz", anns, "val.json")
    ann = read_json_any(path)
    if not isinstance(ann, list) or not ann:
        raise EvalFileError(f"{path}: expected the VizWiz annotations list [{{image, question, answers, answerable}}]")
    if "answers" not in ann[0]:
        raise EvalFileError(f"{path}: no 'answers' (VizWiz test answers are hidden); score val.json, or make an "
                            "upload with qmamba.eval.submission.vizwiz_test")
    require_fields(path, ann, ("image", "answers", "answerable"), "VizWiz annotations")
    check_gt_answers(path, ann, "image")
    images = [a["image"] for a in ann]
    if "image" in records[0]:
        preds = keyed_predictions(pred_path, records, "image", "answer", VIZWIZ_PREDS)
    else:
        preds = keyed_predictions(pred_path, records, "question_id", "text", VIZWIZ_PREDS)
        if not set(preds) <= set(images):
            id_map = _vizwiz_id_map(questions, pred_path)
            unknown = [k for k in preds if k not in id_map]
            if unknown:
                raise PredictionMismatchError(f"{pred_path}: question ids {unknown[:5]} are not in {questions}")
            preds = {id_map[k]: v for k, v in preds.items()}
    missing = check_coverage(pred_path, preds, set(images), images, str(path), opts["missing"])
    metrics, rows = score_vizwiz(ann, preds, opts["pipeline"], skip_missing=opts["missing"] == "skip")
    return metrics, rows, counts(len(images), preds, missing, opts["missing"])


TASK = TaskSpec("vizwiz", load_items, write_results, results_filename="results.json",
                main_metric="overall", score_files=score_files, options={"pipeline": PIPELINES, "missing": MISSING})
