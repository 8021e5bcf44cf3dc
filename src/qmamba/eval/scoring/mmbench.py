"""MMBench letter extraction and CircularEval (spec section 7).

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

import re
import string
from typing import Any

from qmamba.eval.scoring.common import percent

EXTRACTORS = ("vlmevalkit", "vlmevalkit-aca64dbb", "opencompass-2023")

# pandas read_csv's default NA strings: such option cells are NaN for VLMEvalKit (not a choice).
NA_STRINGS = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
})
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
