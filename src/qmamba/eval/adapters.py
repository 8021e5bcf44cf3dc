"""Per-task glue for ``score_task``: read the annotations, match the predictions, call the scorer.

Each adapter takes (annotation paths, predictions path, prediction records, questions path or None,
resolved options) and returns (metrics, per-question rows, counts). Formats: see ``qmamba.eval.score``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EmptyPredictionsError, EvalFileError, PredictionMismatchError
from qmamba.eval.io import read_json_any, require_fields
from qmamba.eval.score import check_coverage, counts, keyed_predictions, only_file
from qmamba.eval.scoring.gqa import llava_convert, score_gqa
from qmamba.eval.scoring.mmbench import score_mmbench
from qmamba.eval.scoring.pope import score_pope
from qmamba.eval.scoring.textvqa import prompt_question, score_textvqa
from qmamba.eval.scoring.vizwiz import score_vizwiz
from qmamba.eval.scoring.vqav2 import score_vqav2
from qmamba.eval.tasks import mmbench as mmbench_task
from qmamba.eval.tasks import pope as pope_task

VQA_PREDS = 'VQAv2 results [{"question_id", "answer"}] or answers JSONL {"question_id", "text"}'
VIZWIZ_PREDS = 'VizWiz results [{"image", "answer"}] or answers JSONL {"question_id", "text"}'
GQA_PREDS = 'GQA predictions [{"questionId", "prediction"}] or answers JSONL {"question_id", "text"}'
TEXTVQA_PREDS = 'TextVQA results [{"question_id", "answer"}] or answers JSONL {"question_id", "prompt", "text"}'


def _check_gt_answers(path: Path, records: list[dict[str, Any]], id_field: str, exactly: int | None = None) -> None:
    """Every record has a non-empty list of GT answers: strings (``exactly`` of them: TextVQA) or
    {"answer": ...} dicts (VQAv2, VizWiz)."""
    for rec in records:
        answers = rec["answers"]
        if exactly is not None:
            ok = isinstance(answers, list) and len(answers) == exactly and all(isinstance(a, str) for a in answers)
            need = f"a list of {exactly} strings"
        else:
            ok = isinstance(answers, list) and bool(answers) and all(isinstance(a, dict) and "answer" in a
                                                                     for a in answers)
            need = 'a non-empty list of {"answer": ...} objects'
        if not ok:
            shown = f"{len(answers)} items" if isinstance(answers, list) else repr(answers)
            raise EvalFileError(f"{path}: {id_field} {rec[id_field]!r} has answers of {shown}; expected {need}")


def vqav2(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """v2_mscoco_<split>_annotations.json x VQAv2 predictions."""
    path = only_file("vqav2", anns, "v2_mscoco_val2014_annotations.json")
    data = read_json_any(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        hint = " (it looks like a questions file)" if isinstance(data, dict) and "questions" in data else ""
        raise EvalFileError(f"{path}: no 'annotations' list{hint}; expected v2_mscoco_<split>_annotations.json")
    ann = data["annotations"]
    require_fields(path, ann, ("question_id", "answers", "answer_type", "question_type"), "VQAv2 annotations")
    _check_gt_answers(path, ann, "question_id")
    text_field = "answer" if "answer" in records[0] else "text"
    preds = keyed_predictions(pred_path, records, "question_id", text_field, VQA_PREDS)
    expected = [str(a["question_id"]) for a in ann]
    missing = check_coverage(pred_path, preds, set(expected), expected, str(path), opts["missing"])
    metrics, rows = score_vqav2(ann, preds, opts["pipeline"], skip_missing=opts["missing"] == "skip")
    if questions is not None:
        from qmamba.eval.tasks.vqav2 import load_items

        text = {str(it.question_id): it.question for it in load_items(questions)}
        rows = [{**r, "question": text.get(str(r["question_id"]))} for r in rows]
    return metrics, rows, counts(len(expected), preds, missing, opts["missing"])


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


def vizwiz(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """VizWiz val.json x predictions keyed by image (or by question id, mapped through ``questions``)."""
    path = only_file("vizwiz", anns, "val.json")
    ann = read_json_any(path)
    if not isinstance(ann, list) or not ann:
        raise EvalFileError(f"{path}: expected the VizWiz annotations list [{{image, question, answers, answerable}}]")
    if "answers" not in ann[0]:
        raise EvalFileError(f"{path}: no 'answers' (VizWiz test answers are hidden); score val.json, or make an "
                            "upload with qmamba.eval.submission.vizwiz_test")
    require_fields(path, ann, ("image", "answers", "answerable"), "VizWiz annotations")
    _check_gt_answers(path, ann, "image")
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


def gqa(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """testdev_balanced_questions.json x GQA predictions (answers JSONL converted as LLaVA does)."""
    path = only_file("gqa", anns, "testdev_balanced_questions.json")
    data = read_json_any(path)
    if not isinstance(data, dict) or not data:
        raise EvalFileError(f"{path}: expected the GQA questions JSON {{questionId: {{answer, isBalanced, types}}}}")
    for qid, q in data.items():
        if not isinstance(q, dict) or "answer" not in q or "structural" not in q.get("types", {}):
            raise EvalFileError(f"{path}: question {qid!r} lacks 'answer' or 'types.structural'")
    if "questionId" in records[0]:
        preds = keyed_predictions(pred_path, records, "questionId", "prediction", GQA_PREDS)
    else:
        raw = keyed_predictions(pred_path, records, "question_id", "text", GQA_PREDS)
        preds = {k: llava_convert(v) for k, v in raw.items()}
    expected = [qid for qid, q in data.items() if q.get("isBalanced", False)]
    missing = check_coverage(pred_path, preds, set(data), expected, str(path), opts["missing"])
    metrics, rows = score_gqa(data, preds, skip_missing=opts["missing"] == "skip")
    return metrics, rows, counts(len(expected), preds, missing, opts["missing"])


def _textvqa_by_key(pred_path: Path, records: list[dict], text_field: str, ann: list[dict]) -> tuple:
    """eval_textvqa.py matching: (question_id as image_id, question of the prompt) -> the LAST annotation
    with that (image_id, question.lower()). Returns (pairs, {key: unanswered annotations})."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for a in ann:
        groups.setdefault((str(a["image_id"]), a["question"].lower()), []).append(a)
    if any("prompt" not in r for r in records):
        raise PredictionMismatchError(
            f"{pred_path}: some question_id values are not TextVQA question ids, so answers are matched as LLaVA's "
            "eval_textvqa.py does, by (image_id, question of the prompt), and every record needs a 'prompt'; "
            "give real question ids or the prompts")
    require_fields(pred_path, records, ("question_id", "prompt", text_field), TEXTVQA_PREDS)
    used: dict[tuple[str, str], int] = {}
    pairs = []
    for i, rec in enumerate(records):
        question = prompt_question(rec["prompt"])
        if question is None:
            raise EvalFileError(f"{pred_path}: record {i} prompt is neither 2 lines nor 3 lines with "
                                "'Reference OCR token: ' (eval_textvqa.py prompt_processor)")
        key = (str(rec["question_id"]), question)
        if key not in groups:
            raise PredictionMismatchError(f"{pred_path}: record {i}: no annotation with image_id "
                                          f"{key[0]!r} and question {key[1]!r}")
        used[key] = used.get(key, 0) + 1
        if used[key] > len(groups[key]):
            raise PredictionMismatchError(f"{pred_path}: record {i}: more answers than questions for {key}")
        last = groups[key][-1]
        pairs.append({"question_id": last["question_id"], "image_id": key[0], "prediction": rec[text_field],
                      "answers": last["answers"]})
    unanswered = {k: g[used.get(k, 0):] for k, g in groups.items() if used.get(k, 0) < len(g)}
    return pairs, unanswered


def textvqa(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """TextVQA_0.5.1_val.json x predictions matched by question id, else by (image_id, question)."""
    path = only_file("textvqa", anns, "TextVQA_0.5.1_val.json")
    data = read_json_any(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise EvalFileError(f"{path}: no 'data' list; expected TextVQA_0.5.1_val.json")
    ann = data["data"]
    require_fields(path, ann, ("question_id", "image_id", "question", "answers"), "TextVQA annotations")
    _check_gt_answers(path, ann, "question_id", exactly=10)  # m4c_evaluator asserts ten
    text_field = "answer" if "answer" in records[0] else "text"
    by_qid = {str(a["question_id"]): a for a in ann}
    if all(str(r.get("question_id")) in by_qid for r in records):
        preds = keyed_predictions(pred_path, records, "question_id", text_field, TEXTVQA_PREDS)
        missing = check_coverage(pred_path, preds, set(by_qid), list(by_qid), str(path), opts["missing"])
        pairs = [{"question_id": a["question_id"], "image_id": a["image_id"],
                  "prediction": preds.get(str(a["question_id"])), "answers": a["answers"]} for a in ann]
    else:
        pairs, unanswered = _textvqa_by_key(pred_path, records, text_field, ann)
        missing = [a["question_id"] for group in unanswered.values() for a in group]
        if missing and opts["missing"] == "error":
            check_coverage(pred_path, {}, set(), [str(m) for m in missing], str(path), "error")
        pairs += [{"question_id": a["question_id"], "image_id": a["image_id"], "prediction": None,
                   "answers": a["answers"]} for group in unanswered.values() for a in group]
        preds = {str(i): r[text_field] for i, r in enumerate(records)}
    if opts["missing"] == "skip":
        pairs = [p for p in pairs if p["prediction"] is not None]
    metrics, rows = score_textvqa(pairs)
    return metrics, rows, counts(len(ann), preds, missing, opts["missing"])




def _pope_labels(anns: list[Path]) -> dict[str, list[dict]]:
    """All label files -> {split: records in file order}; a split given twice raises."""
    if not anns:
        raise EvalFileError("pope: give the label file of every split scored (coco_pope_<split>.json)")
    labels: dict[str, list[dict]] = {}
    for path in anns:
        for split, recs in pope_task.label_records_by_split(path).items():
            if split in labels:
                raise EvalFileError(f"{path}: split {split!r} was already given by another annotations file")
            labels[split] = recs
    return labels


def _pope_split(i: int, rec: dict, categories: dict[str, str], labels: dict, pred_path: Path) -> tuple[str, str]:
    """(split, id within the split): ``category`` field > ``split:id`` id > questions file > the only split."""
    split, local = pope_task.parse_item_id(rec["question_id"])
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
    missing = [pope_task.item_id(split, r["question_id"]) for p, r in pairs if p is None]
    return rows, missing


def pope(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """POPE label files (one per split) x answers JSONL."""
    labels = _pope_labels(anns)
    require_fields(pred_path, records, ("question_id", "text"), 'POPE answers JSONL {"question_id", "text"}')
    for i, rec in enumerate(records):
        if not isinstance(rec["text"], str):
            raise EvalFileError(f"{pred_path}: record {i} field 'text' is {rec['text']!r}, expected a string")
    categories = {}
    if questions is not None:
        categories = {str(it.question_id): it.meta.get("category") for it in pope_task.load_items(questions)}
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


def _mmbench_predictions(pred_path: Path, records: list[dict]) -> dict[str, str]:
    """{str(index): prediction}; a table's empty prediction cell counts as no answer."""
    if "prediction" in records[0]:
        require_fields(pred_path, records, ("index", "prediction"), "MMBench table with index and prediction")
        records = [{"question_id": mmbench_task.parse_index(r["index"], f"{pred_path} row {i + 2}"),
                    "text": r["prediction"]} for i, r in enumerate(records) if r["prediction"] != ""]
        if not records:
            raise EmptyPredictionsError(f"{pred_path}: every prediction cell is empty")
    return keyed_predictions(pred_path, records, "question_id", "text",
                             'MMBench table with "prediction" column or answers JSONL {"question_id", "text"}')


def mmbench(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """MMBench dev TSV/XLSX (with answers) x predictions, CircularEval."""
    path = only_file("mmbench", anns, "mmbench_dev_20230712.tsv")
    rows = mmbench_task.read_rows(path)
    if "answer" not in rows[0]:
        raise EvalFileError(f"{path}: no 'answer' column (MMBench test answers are not public); score the dev "
                            "split, or make an upload with qmamba.eval.submission.mmbench_xlsx")
    preds = _mmbench_predictions(pred_path, records)
    expected = [str(r["index"]) for r in rows]
    missing = check_coverage(pred_path, preds, set(expected), expected, str(path), opts["missing"])
    if opts["missing"] == "skip" and missing:
        gone = {int(float(m)) % 1000000 for m in missing}
        rows = [r for r in rows if r["index"] % 1000000 not in gone]
    metrics, per_q = score_mmbench(rows, {int(k): v for k, v in preds.items()}, opts["extractor"])
    return metrics, per_q, counts(len(expected), preds, missing, opts["missing"])


ADAPTERS = {"vqav2": vqav2, "vizwiz": vizwiz, "gqa": gqa, "textvqa": textvqa, "pope": pope, "mmbench": mmbench}
