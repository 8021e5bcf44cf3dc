"""MMBench: its questions, its results table, and CircularEval with letter extraction (docs/scoring.md,
section "MMBench").

Questions: the TSV (or XLSX) with ``index, question, hint, A..D, answer, category, image, ...``. One item per
row (circular copies included, as LLaVA runs them); prompt as LLaVA ``llava/eval/model_vqa_mmbench.py``
builds it: ``hint\\n`` (if any) + question, then ``\\nA. opt`` for the options up to the first missing one,
then the letter instruction. Images are base64 cells; they stay in ``item.meta["image_base64"]`` and
``load_image`` decodes them with PIL.

Extractors (``extract_letter(..., extractor=...)``), each ``can_infer_option(...) or can_infer_text(...)``:

* ``"vlmevalkit"`` (default): open-compass/VLMEvalKit@e8e78f05 ``vlmeval/utils/matching_util.py``: refusals
  -> 'Z'; a single choice letter among the tokens counts only within the last 4 tokens; a lone token 'Z'
  -> 'Z'; then "(correct) answer is X"; text matching only if the answer is at most twice the options' length.
  The VERBOSE-env quantifier check is not applied (VERBOSE unset, as by default).
* ``"vlmevalkit-aca64dbb"``: the 2024-01..2025-08 version: no last-4-tokens rule, no regex, no length guard.
* ``"opencompass-2023"``: open-compass/opencompass@6ca2be66 ``tools/eval_mmbench.py``, WITHOUT its ChatGPT
  fallback: an answer no rule decides is undecided, and undecided rows count as wrong.

CircularEval (VLMEvalKit ``mcq_circular_eval``): rows with the same ``int(index % 1e6)`` form one question;
it scores 1 only if every row's extracted letter equals that row's ``answer``. Any wrong letter (a 'Z'
included) makes it 0; an undecided row, which VLMEvalKit sends to an LLM judge, also makes it 0 here
(the judge's exact-matching mode gives 0 too).
"""

from __future__ import annotations

import base64
import io
import re
import string
from pathlib import Path
from typing import Any

from qmamba.eval.errors import EmptyPredictionsError, EvalFileError
from qmamba.eval.io import read_table, require_fields, write_tsv
from qmamba.eval.tasks.common import MMBENCH_SUFFIX, EvalItem, TaskSpec
from qmamba.eval.tasks.matching import MISSING, check_coverage, counts, keyed_predictions, only_file
from qmamba.eval.tasks.metrics import percent

# pandas read_csv's default NA strings: such option cells are NaN for VLMEvalKit (not a choice).
NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})


# ------------------------------------------------------------------------------------------- questions
OPTION_LETTERS = ("A", "B", "C", "D")  # model_vqa_mmbench.py all_options
REQUIRED_COLUMNS = ("index", "question")


def is_none(value: Any) -> bool:
    """model_vqa_mmbench.py is_none on a pandas-read cell: NaN (pandas' NA strings) or 'nan'/'none' in any case."""
    return value is None or str(value) in NA_STRINGS or str(value).lower() in ("nan", "none")


def options_of(row: dict[str, Any]) -> list[str]:
    """The option texts A, B, C, D up to (not including) the first missing one."""
    options = []
    for letter in OPTION_LETTERS:
        if letter not in row or is_none(row[letter]):
            break
        options.append(str(row[letter]))
    return options


def build_prompt(row: dict[str, Any]) -> str:
    """LLaVA's MMBench user message with ``--single-pred-prompt`` (English)."""
    question = str(row["question"])
    if not is_none(row.get("hint")):
        question = f"{row['hint']}\n{question}"
    for letter, option in zip(OPTION_LETTERS, options_of(row)):
        question += f"\n{letter}. {option}"
    return question + MMBENCH_SUFFIX


def parse_index(value: Any, where: str) -> int:
    """An ``index`` cell ('241', '241.0', 241) -> 241."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = float("nan")
    if f != f or f != int(f):
        raise EvalFileError(f"{where}: index {value!r} is not an integer")
    return int(f)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The table's rows with ``index`` as int; errors name the missing column."""
    rows = read_table(path)
    if not rows:
        raise EvalFileError(f"{path}: no rows")
    missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
    if missing:
        raise EvalFileError(f"{path}: no column(s) {missing}; columns are {list(rows[0])[:16]}")
    for i, row in enumerate(rows):
        row["index"] = parse_index(row["index"], f"{path} row {i + 2}")
    return rows


def _resolve_images(rows: list[dict[str, Any]]) -> dict[int, str]:
    """index -> base64; VLMEvalKit TSVs store a repeated image as the index of the row holding it."""
    images = {r["index"]: r.get("image", "") for r in rows}
    for idx, img in images.items():
        if img and len(img) <= 64 and img.strip().isdigit() and int(img) in images:
            images[idx] = images[int(img)]
    return images


def load_items(path: str | Path) -> list[EvalItem]:
    """Rows -> items (question_id = index, image None, the row minus its image in meta["row"])."""
    rows = read_rows(path)
    images = _resolve_images(rows)
    items = []
    for row in rows:
        rest = {k: v for k, v in row.items() if k != "image"}
        meta = {"row": rest, "options": options_of(row), "image_base64": images[row["index"]] or None}
        items.append(EvalItem(row["index"], None, str(row["question"]), build_prompt(row), meta))
    return items


def image_bytes(item: EvalItem) -> bytes:
    """The encoded image file of an MMBench item."""
    b64 = item.meta.get("image_base64")
    if not b64:
        raise EvalFileError(f"MMBench index {item.question_id}: the row has no image cell")
    try:
        return base64.b64decode(b64, validate=False)
    except ValueError as e:
        raise EvalFileError(f"MMBench index {item.question_id}: image cell is not base64 ({e})") from None


def load_image(item: EvalItem, mode: str | None = "RGB"):
    """The item's image as a PIL image (converted to ``mode`` unless None), as LLaVA's load_image_from_base64."""
    from PIL import Image

    image = Image.open(io.BytesIO(image_bytes(item)))
    return image.convert(mode) if mode else image


def write_results(answers: list[dict[str, Any]], items: list[EvalItem], path: str | Path) -> Path:
    """The rows (without images) plus a ``prediction`` column, as TSV; unanswered rows get an empty cell."""
    text_of = {int(a["question_id"]): a["text"] for a in answers}
    rows = [{**it.meta["row"], "prediction": text_of.get(int(it.question_id))} for it in items]
    columns = list(items[0].meta["row"]) + ["prediction"] if items else ["index", "prediction"]
    write_tsv(path, rows, columns)
    return Path(path)


# --------------------------------------------------------------------------------------------- scoring
EXTRACTORS = ("vlmevalkit", "vlmevalkit-aca64dbb", "opencompass-2023")

_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_SEPARATORS = ".()[],:;!*#{}"  # replaced by spaces before tokenising (VLMEvalKit)
_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")
# opencompass-2023: (prefix, suffix) forms tried in this order when no bare letter decides.
_OC_FORMS = (
    ("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."),
    (":", ""), (":", ","), (":", "."), (":", ")"), (":", ")."),
)


def row_choices(row: dict[str, Any]) -> dict[str, str]:
    """VLMEvalKit build_choices: every upper-case letter column whose cell is not NA -> its option text."""
    return {k: str(row[k]) for k in string.ascii_uppercase if k in row and str(row[k]) not in NA_STRINGS}


def _tokens(answer: str) -> list[str]:
    for ch in _SEPARATORS:
        answer = answer.replace(ch, " ")
    return answer.split()


def infer_option_vlmevalkit(answer: str, choices: dict[str, str], head: bool = True) -> str | bool:
    """can_infer_option; ``head=False`` gives the aca64dbb version (no position rule, no regex)."""
    if "Failed to obtain answer via API" in answer:
        return False
    if any(r in answer for r in _REFUSALS):
        return "Z"
    splits = _tokens(answer)
    present = [c for c in choices if c in splits]
    if len(present) == 1:
        if not head or splits.index(present[0]) > len(splits) - 5:  # HEAD: within the last 4 tokens
            return present[0]
    elif not present and "Z" in splits:
        return "Z"
    if head:
        m = _ANSWER_IS.search(answer)
        if m and m.group(1).upper() in choices:
            return m.group(1).upper()
    return False


def infer_option_oc2023(answer: str) -> str | bool:
    """opencompass 2023 can_infer_option over letters A-E on plain ``split()`` tokens."""
    letters = "ABCDE"
    splits = answer.split()
    bare = [c for c in letters if c in splits]
    if len(bare) == 1:
        if "A" in splits and len(splits) > 3:  # 'A' may be an article: give up on the option rules
            return False
        return bare[0]
    for prefix, suffix in _OC_FORMS:
        hits = [c for c in letters if prefix + c + suffix in splits]
        if len(hits) == 1:
            return hits[0]
    return False


def infer_text(answer: str, choices: dict[str, str], length_guard: bool) -> str | bool:
    """can_infer_text: the unique option whose lower-cased text occurs in the lower-cased answer."""
    answer = answer.lower()
    if length_guard and len(answer) > 2 * sum(len(v) for v in choices.values()):
        return False
    cands = [k for k, v in choices.items() if v.lower() in answer]
    return cands[0] if len(cands) == 1 else False


def extract_letter(answer: str, choices: dict[str, str], extractor: str = "vlmevalkit") -> str | bool:
    """The option letter an answer names ('Z' = refusal), or False when undecided."""
    answer = str(answer)
    if extractor == "vlmevalkit":
        return infer_option_vlmevalkit(answer, choices) or infer_text(answer, choices, length_guard=True)
    if extractor == "vlmevalkit-aca64dbb":
        return infer_option_vlmevalkit(answer, choices, head=False) or infer_text(answer, choices, False)
    if extractor == "opencompass-2023":
        return infer_option_oc2023(answer) or infer_text(answer, choices, length_guard=False)
    raise ValueError(f"unknown MMBench extractor {extractor!r}; choose one of {EXTRACTORS}")


def circular_groups(rows: list[dict[str, Any]]) -> tuple[dict[int, list[dict[str, Any]]], int]:
    """Group rows by ``int(index % 1e6)``, each group in index order, keeping groups whose main row
    (index == group index) exists. Returns (groups, number of orphan rows left out)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(int(int(row["index"]) % 1e6), []).append(row)
    kept = {g: sorted(rs, key=lambda r: int(r["index"])) for g, rs in groups.items()
            if any(int(r["index"]) == g for r in rs)}
    orphans = sum(len(rs) for g, rs in groups.items() if g not in kept)
    return kept, orphans


def score_group(group: list[dict[str, Any]], predictions: dict[int, str], extractor: str) -> dict[str, Any]:
    """One circular question: hit 1 iff every row's extracted letter equals its answer."""
    details, hit, reason = [], 1, "all rows correct"
    for row in group:
        idx = int(row["index"])
        pred = predictions.get(idx)
        letter = False if pred is None else extract_letter(pred, row_choices(row), extractor)
        details.append({"index": idx, "prediction": pred, "extracted": letter or None, "answer": row["answer"]})
        if letter and letter != row["answer"] and hit:
            hit, reason = 0, f"row {idx}: extracted {letter}, answer {row['answer']}"
    if hit and not all(d["extracted"] for d in details):
        missing = [d["index"] for d in details if not d["extracted"]]
        hit, reason = 0, f"undecided (counted wrong): rows {missing}"
    return {"hit": hit, "reason": reason, "rows": details}


def score_mmbench(
    rows: list[dict[str, Any]], predictions: dict[int, str], extractor: str = "vlmevalkit"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Annotation rows (with ``answer``) x {int index: prediction} -> CircularEval metrics in percent."""
    groups, orphans = circular_groups(rows)
    per_q, hits = [], {"overall": [], "split": {}, "l2": {}, "category": {}}
    for g, group in sorted(groups.items()):
        res = score_group(group, predictions, extractor)
        main = next(r for r in group if int(r["index"]) == g)
        hits["overall"].append(res["hit"])
        for key, col in (("split", "split"), ("l2", "l2-category"), ("category", "category")):
            if main.get(col):
                hits[key].setdefault(main[col], []).append(res["hit"])
        per_q.append({"question_id": g, "score": 100.0 * res["hit"], "category": main.get("category"),
                      "l2-category": main.get("l2-category"), "reason": res["reason"], "rows": res["rows"]})
    metrics = {
        "overall": percent(hits["overall"]),
        "per_split": {k: percent(v) for k, v in sorted(hits["split"].items())},
        "per_l2_category": {k: percent(v) for k, v in sorted(hits["l2"].items())},
        "per_category": {k: percent(v) for k, v in sorted(hits["category"].items())},
        "n_circular_questions": len(groups), "n_rows": sum(len(v) for v in groups.values()),
        "n_orphan_rows": orphans,
    }
    return metrics, per_q


# -------------------------------------------------------------------------------------- official files


def _mmbench_predictions(pred_path: Path, records: list[dict]) -> dict[str, str]:
    """{str(index): prediction}; a table's empty prediction cell counts as no answer."""
    if "prediction" in records[0]:
        require_fields(pred_path, records, ("index", "prediction"), "MMBench table with index and prediction")
        records = [{"question_id": parse_index(r["index"], f"{pred_path} row {i + 2}"),
                    "text": r["prediction"]} for i, r in enumerate(records) if r["prediction"] != ""]
        if not records:
            raise EmptyPredictionsError(f"{pred_path}: every prediction cell is empty")
    return keyed_predictions(pred_path, records, "question_id", "text",
                             'MMBench table with "prediction" column or answers JSONL {"question_id", "text"}')


def score_files(anns: list[Path], pred_path: Path, records: list[dict], questions: Path | None, opts: dict) -> tuple:
    """MMBench dev TSV/XLSX (with answers) x predictions, CircularEval."""
    path = only_file("mmbench", anns, "mmbench_dev_20230712.tsv")
    rows = read_rows(path)
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


TASK = TaskSpec("mmbench", load_items, write_results, results_filename="results.tsv",
                main_metric="overall", score_files=score_files, options={"extractor": EXTRACTORS, "missing": MISSING},
                max_new_tokens=1024)
