"""The MMBench-like set: a dev TSV with circular copies, scored by CircularEval.

One multiple-choice question per image (``choice.make_choice``: 2-4 options, five categories over
two L2 categories). Question ``g`` (index g = 0, 1, ...) with n options is written as n rows:
the original and, for k = 1..n-1, a copy with index ``g + k * 1,000,000`` whose option j is the
original option (j + k) mod n, so the answer letter moves from a to (a - k) mod n.

Columns: index, question, hint (empty for most categories), A, B, C, D (empty past n), answer,
category, image (base64 PNG/JPEG), source, l2-category, comment, split ("dev").

Chance: a uniform random guesser passes a CircularEval group with probability (1/n)^n (1/4 for
2 options, 1/27 for 3, 1/256 for 4); the set's chance level is the mean over questions. (Per row,
without circular scoring, it is the mean of 1/n.) Any constant letter scores 0 under CircularEval.
"""

from __future__ import annotations

import base64
import csv
from pathlib import Path

from qmamba.data.synth.choice import Choice, make_choice
from qmamba.data.synth.files import write_jsonl
from qmamba.data.synth.scene import Scene, scene_rng

COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
           "l2-category", "comment", "split")
CIRCULAR_STRIDE = 1_000_000


def circular_rows(g: int, choice: Choice) -> list[tuple[int, Choice]]:
    """(index, choice) of the original question ``g`` and its n-1 rotated copies."""
    return [(g + k * CIRCULAR_STRIDE, choice.rotated(k)) for k in range(len(choice.options))]


def _row(index: int, choice: Choice, image_b64: str) -> list:
    options = list(choice.options) + [""] * (4 - len(choice.options))
    return [index, choice.question, choice.hint or "", *options, choice.answer_letter, choice.category,
            image_b64, "qmamba_synth", choice.l2_category, "", "dev"]


def build_mmbench(task_dir: Path, scenes: list[Scene], seed: int, stream: int, image_dir: str = "images") -> dict:
    rows, llava = [], []
    for g, scene in enumerate(scenes):
        rng = scene_rng(seed, stream, g)
        choice = None
        for _ in range(20):
            choice = make_choice(scene, rng)
            if choice is not None:
                break
        if choice is None:
            continue
        image_b64 = base64.b64encode((task_dir / image_dir / scene.image).read_bytes()).decode("ascii")
        for index, rotated in circular_rows(g, choice):
            rows.append(_row(index, rotated, image_b64))
            llava.append({"question_id": index, "image": scene.image, "text": rotated.prompt(),
                          "category": rotated.category})
    rows.sort(key=lambda r: r[0])
    llava.sort(key=lambda r: r["question_id"])
    files = {"tsv": "mmbench_dev_20230712.tsv", "llava_questions": "llava_mmbench_dev.jsonl"}
    with open(task_dir / files["tsv"], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    write_jsonl(task_dir / files["llava_questions"], llava)
    groups = sum(1 for r in rows if r[0] < CIRCULAR_STRIDE)
    return {"files": files, "questions": groups, "rows": len(rows)}
