"""MMBench: the TSV (or XLSX) with ``index, question, hint, A..D, answer, category, image, ...`` (spec 7).

One item per row (circular copies included, as LLaVA runs them); prompt as LLaVA
``llava/eval/model_vqa_mmbench.py`` builds it: ``hint\\n`` (if any) + question, then ``\\nA. opt`` for the
options up to the first missing one, then the letter instruction. Images are base64 cells; they stay in
``item.meta["image_base64"]`` and ``load_image`` decodes them with PIL.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from qmamba.eval.errors import EvalFileError
from qmamba.eval.io import read_table, write_tsv
from qmamba.eval.scoring.mmbench import NA_STRINGS
from qmamba.eval.tasks.common import MMBENCH_SUFFIX, EvalItem

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
