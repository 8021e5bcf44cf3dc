"""How well a micro LM answers a world's evaluation questions when each image is replaced by its exact
detailed caption in words (the "grounded" documents of its pretraining): an upper bound on what any connector
can reach through this LM, and a gate of ``qmamba micro build --size small``.

``score_split``: POPE-like accuracy and yes-ratio of one split; ``score_mmbench``: MMBench-like accuracy per row
(letter by greedy first token among the row's options) and under CircularEval (every circular copy right),
beside a uniform guess, and how often it picks each letter. ``benchmarks/micro_lm_grounding.py`` prints both for
a world and an LM. ``question_type`` names the family of a question from its words alone (the build's per-type
grounded accuracy).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from qmamba.data.chat import IMAGE_PLACEHOLDER, encode_with_image, get_template, render_turns
from qmamba.data.processor import pad_rows
from qmamba.data.synth import vocab
from qmamba.data.synth.conversations import CAPTION_REQUESTS
from qmamba.data.synth.scene import Scene
from qmamba.micro.corpus import scene_in_words
from qmamba.models.mamba_lm import MambaLM

SUFFIX = "Answer the question using a single word or phrase."
SPLITS = ("random", "popular", "adversarial")
_COLORS = "|".join(vocab.COLOR_NAMES)
_RELATION = "to the left of|to the right of|above|below"
# (family, pattern of the question's first line), tried in order: the first that matches names the family
QUESTION_PATTERNS = (
    ("choose_size", r"Is .* (small or large|large or small)\?$"),
    ("choose_shape", r"Is .* an? \w+ or an? \w+\?$"),
    ("choose_rel", r"Is .* (to the (left|right) or to the (left|right) of|(above|below) or (above|below)) .*\?$"),
    ("choose_color", rf"Is .* ({_COLORS}) or ({_COLORS})\?$"),
    ("logic_or", r"Is there .* or .*\?$"),
    ("exist", r"Is there .* in the image\?$"),
    ("logic_and", r"Are there both .*\?$"),
    ("same_attr", r"Are .* the same (color|shape|size)\?$"),
    ("verify_rel", rf"Is .* ({_RELATION}) .*\?$"),
    ("verify_color", rf"Is .* ({_COLORS})\?$"),
    ("count", r"How many .*\?$"),
    ("query_color", r"What color is .*\?$"),
    ("query_shape", r"What shape is .*\?$"),
    ("query_size", r"What size is .*\?$"),
    ("spatial_relationship", r"Where is .* relative to .*\?$"),
    ("query_position", r"Where is .*\?$"),
    ("read_text", r"What (is written|number is written|word is written|does the \w+ text say).*\?$"),
    ("attribute_comparison", r"Which object has the same color as .*\?$"),
)


def prompt_ids(tokenizer, scene: Scene, question: str, suffix: str = "\n" + SUFFIX) -> list[int]:
    """The zephyr-templated user turn: the scene in words, then the question (the assistant turn starts next)."""
    text = f"{scene_in_words(scene)}\n{question}{suffix}"
    ids: list[int] = []
    for _, piece in render_turns(get_template("zephyr"), [("user", text)]):
        ids += encode_with_image(tokenizer, piece)
    return ids


def user_message(piece: str) -> str:
    """The message of a zephyr user turn as ``render_turns`` renders it (the piece itself if it is not one)."""
    template = get_template("zephyr")
    head, tail = template.user.split("{msg}")
    text = piece.removeprefix(template.later_user_prefix) if piece.startswith(template.later_user_prefix + head) \
        else piece
    return text.removeprefix(head).removesuffix(tail) if text.startswith(head) and text.endswith(tail) else piece


def question_type(message: str) -> str:
    """The family of the question in a user ``message`` (the scene in words or ``<image>`` first, or neither),
    from its words alone: a ``qmamba.data.synth.families`` name ("count", "verify_rel", ...), "caption", "ocr"
    (a reading question with OCR tokens), "choice:<category>" (lettered options; MMBench's categories),
    "vizwiz:<family>" (the VizWiz suffix, which may be answered "unanswerable") or "other"."""
    lines = [line for line in message.split("\n") if line and line != IMAGE_PLACEHOLDER
             and not line.startswith("Image: ")]
    if not lines:
        return "other"
    first = lines[0]
    if first in CAPTION_REQUESTS:
        return "caption"
    family = next((name for name, pattern in QUESTION_PATTERNS if re.match(pattern, first)), "other")
    if any(line.startswith("A. ") for line in lines):
        if first.startswith("The objects are placed on"):  # the hint line of the cross-instance categories
            family = next((n for n, p in QUESTION_PATTERNS if len(lines) > 1 and re.match(p, lines[1])), "other")
        return "choice:" + {"query_color": "attribute_recognition", "query_shape": "attribute_recognition",
                            "query_size": "attribute_recognition", "query_position": "object_localization",
                            "read_text": "OCR"}.get(family, family)
    if vocab.OCR_PREFIX.strip() in message:
        return "ocr"
    if "respond with 'Unanswerable'" in message:
        return "vizwiz:" + family
    return family


@torch.no_grad()
def score_split(lm: MambaLM, tokenizer, pope_dir: Path, split: str, batch: int = 64) -> dict:
    scenes = {s["image"]: Scene.from_dict(s) for s in json.loads((pope_dir / "scenes.json").read_text())}
    rows = [json.loads(line) for line in (pope_dir / "coco" / f"coco_pope_{split}.json").read_text().splitlines()]
    yes, no = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes", "no"))
    preds = []
    for k in range(0, len(rows), batch):
        chunk = rows[k:k + batch]
        padded = pad_rows([prompt_ids(tokenizer, scenes[r["image"]], r["text"]) for r in chunk], 0, "left")
        logits = _last_logits(lm, padded)  # (b, v)
        preds += (logits[:, yes] > logits[:, no]).tolist()
    truth = [r["label"] == "yes" for r in rows]
    return {"split": split, "questions": len(rows), "accuracy": sum(p == t for p, t in zip(preds, truth)) / len(rows),
            "yes_ratio": sum(preds) / len(rows)}


@torch.no_grad()
def score_mmbench(lm: MambaLM, tokenizer, mm_dir: Path, batch: int = 64) -> dict:
    """Accuracy per row and per circular group of the MMBench-like questions (the llava jsonl holds the prompts),
    how often each letter is picked (``letters``) and right (``answer_letters``), and the accuracy per category.
    A reader that does not read the options but favours a letter scores about chance per row and below chance
    under CircularEval (a constant letter passes no group)."""
    scenes = {s["image"]: Scene.from_dict(s) for s in json.loads((mm_dir / "scenes.json").read_text())}
    tsv = next(mm_dir.glob("*.tsv")).read_text().splitlines()
    head = tsv[0].split("\t")
    answers = {int(r[0]): r[head.index("answer")] for r in (line.split("\t") for line in tsv[1:])}
    rows = [json.loads(line) for line in (mm_dir / "llava_mmbench_dev.jsonl").read_text().splitlines()]
    letters = {c: tokenizer.encode(c, add_special_tokens=False)[0] for c in "ABCD"}
    hits, chance, groups = 0, 0.0, {}
    picked, truth, by_category = dict.fromkeys("ABCD", 0), dict.fromkeys("ABCD", 0), {}
    for k in range(0, len(rows), batch):
        chunk = rows[k:k + batch]
        ids = [prompt_ids(tokenizer, scenes[r["image"]], r["text"], suffix="") for r in chunk]
        padded = pad_rows(ids, 0, "left")
        logits = _last_logits(lm, padded)  # (b, v)
        for r, row_logits in zip(chunk, logits):
            n = sum(f"\n{c}. " in r["text"] for c in "ABCD")
            options = list("ABCD")[:n]
            pred = max(options, key=lambda c: float(row_logits[letters[c]]))
            hits += pred == answers[r["question_id"]]
            picked[pred] += 1
            truth[answers[r["question_id"]]] += 1
            cat = by_category.setdefault(r.get("category", "other"), [0, 0])
            cat[0] += 1
            cat[1] += pred == answers[r["question_id"]]
            chance += 1 / n
            group = groups.setdefault(r["question_id"] % 1_000_000, [True, n])
            group[0] &= pred == answers[r["question_id"]]
    return {"questions": len(rows), "accuracy": hits / len(rows), "chance": chance / len(rows),
            "circular": sum(ok for ok, _ in groups.values()) / len(groups),
            "circular_chance": sum((1 / n) ** n for _, n in groups.values()) / len(groups),
            "letters": picked, "answer_letters": truth,
            "category_accuracy": {c: hit / n for c, (n, hit) in sorted(by_category.items())}}


def _last_logits(lm: MambaLM, padded: dict) -> torch.Tensor:
    """(b, v) next-token logits of left-padded rows, on the LM's device (bf16 autocast on CUDA)."""
    from qmamba.micro.loop import autocast

    device = next(lm.parameters()).device
    with autocast(device):
        out = lm(padded["input_ids"].to(device), attention_mask=padded["attention_mask"].to(device))
    return out.logits[:, -1].float().cpu()
