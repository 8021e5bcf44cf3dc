"""TextVQA: its questions, its results file, and its accuracy as LLaVA ``llava/eval/m4c_evaluator.py``
TextVQAAccuracyEvaluator computes it (docs/scoring.md, section "TextVQA").

Questions: official ``TextVQA_0.5.1_val.json`` or LLaVA ``llava_textvqa_val_v051_ocr.jsonl``. LLaVA's prompt
has three lines: question, ``Reference OCR token: <tokens>``, the short-answer suffix. The OCR tokens come
from a record's ``ocr_tokens`` field or from ``ocr_file`` (TextVQA Rosetta OCR JSON
``{"data": [{"image_id", "ocr_tokens"}]}`` or a plain ``{image_id: [tokens]}``); with no tokens for a
question the line is left out. LLaVA's token file is not public (docs/scoring.md, section "Open
questions"), so the joining here, ``", ".join(tokens)``, is our choice: for exact parity use LLaVA's
JSONL, whose text is used verbatim.

All ten GT answers and the prediction go through EvalAIAnswerProcessor; the prediction scores the
leave-one-out accuracy of the matching processed GT answer, 0.0 when none matches. Predictions are matched
to questions by question id, else as ``eval_textvqa.py`` does, by (image_id, question.lower()).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError, PredictionMismatchError
from qmamba.eval.io import read_json_any, require_fields, write_json
from qmamba.eval.normalize import evalai_process
from qmamba.eval.tasks.common import SHORT_ANSWER_SUFFIX, EvalItem, TaskSpec, check_unique_ids, llava_items
from qmamba.eval.tasks.matching import MISSING, check_coverage, check_gt_answers, counts, keyed_predictions, only_file
from qmamba.eval.tasks.metrics import leave_one_out_accuracy

OCR_LINE = "Reference OCR token: "


# ------------------------------------------------------------------------------------------- questions
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


# --------------------------------------------------------------------------------------------- scoring
def prompt_question(prompt: str) -> str | None:
    """eval_textvqa.py prompt_processor (its two cases): the question of a LLaVA prompt, lower-cased.

    3 lines containing "Reference OCR token: " -> line 0; 2 lines -> line 0; anything else -> None.
    """
    lines = prompt.split("\n")
    if OCR_LINE in prompt and len(lines) == 3:
        return lines[0].lower()
    if len(lines) == 2:
        return lines[0].lower()
    return None


def answer_accuracy(pred: str, answers: list[str]) -> float:
    """m4c: processed prediction vs the ten processed GT answers (10 are required; the caller checks)."""
    gts = [evalai_process(a) for a in answers]
    return leave_one_out_accuracy(evalai_process(pred), gts)


def score_textvqa(pairs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``pairs``: {"question_id", "prediction" (None = missing, scored 0), "answers"} -> (metrics, rows)."""
    accs, rows = [], []
    for p in pairs:
        acc = 0.0 if p["prediction"] is None else answer_accuracy(p["prediction"], p["answers"])
        accs.append(acc)
        compared = None if p["prediction"] is None else evalai_process(p["prediction"])
        rows.append({**p, "compared": compared, "score": 100 * acc, "missing": p["prediction"] is None})
    return {"accuracy": 100.0 * (sum(accs) / len(accs)) if accs else None}, rows  # eval_textvqa.py order


# -------------------------------------------------------------------------------------- official files
TEXTVQA_PREDS = 'TextVQA results [{"question_id", "answer"}] or answers JSONL {"question_id", "prompt", "text"}'


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


def score_files(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """TextVQA_0.5.1_val.json x predictions matched by question id, else by (image_id, question)."""
    path = only_file("textvqa", anns, "TextVQA_0.5.1_val.json")
    data = read_json_any(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise EvalFileError(f"{path}: no 'data' list; expected TextVQA_0.5.1_val.json")
    ann = data["data"]
    require_fields(path, ann, ("question_id", "image_id", "question", "answers"), "TextVQA annotations")
    check_gt_answers(path, ann, "question_id", exactly=10)  # m4c_evaluator asserts ten
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


TASK = TaskSpec("textvqa", load_items, write_results, results_filename="results.json",
                main_metric="accuracy", score_files=score_files, options={"missing": MISSING})
