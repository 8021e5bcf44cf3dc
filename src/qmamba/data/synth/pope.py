"""The POPE-like object-hallucination set: random, popular and adversarial negative sampling.

Object categories are colour + shape ("red circle"; 35 of them; text objects are not
categories). Every POPE image has at least 3 distinct categories. Per image, ``k`` = 3 present
categories are drawn at random as positives (label "yes", the same in all three splits) and
``k`` absent categories as negatives (label "no"), as POPE defines them:

* random: ``k`` absent categories drawn uniformly at random;
* popular: the ``k`` absent categories that occur in the most images of this set (ties by name);
* adversarial: the ``k`` absent categories with the highest co-occurrence with the image's
  present categories, i.e. the sum over present p of #images containing both p and c (ties by
  frequency, then name).

Frequencies and co-occurrences are counted over the POPE images themselves. Each split is exactly
balanced, so any constant answer scores 50% accuracy (always "yes": precision 0.5, recall 1,
F1 2/3; always "no": F1 undefined/0).

Files: ``coco/coco_pope_{random,popular,adversarial}.json`` (JSON lines ``question_id, image,
text, label``, ids 1..N per split, yes/no interleaved per image) and ``llava_pope_test.jsonl``
(all splits, ``category`` = split, question_id = split_index * 1,000,000 + id, same order).
"""

from __future__ import annotations

from collections import Counter
from itertools import permutations
from pathlib import Path

import numpy as np

from qmamba.data.synth import vocab
from qmamba.data.synth.files import write_jsonl
from qmamba.data.synth.scene import Scene, scene_rng

SPLITS = ("random", "popular", "adversarial")
POPE_K = 3  # positives (and negatives) per image
CATEGORIES = tuple(f"{c} {s}" for c in vocab.COLOR_NAMES for s in vocab.SHAPES)


def statistics(scenes: list[Scene]) -> tuple[Counter, Counter]:
    """(images per category, images per ordered category pair)."""
    freq, cooc = Counter(), Counter()
    for scene in scenes:
        cats = scene.categories()
        freq.update(cats)
        cooc.update(permutations(sorted(cats), 2))
    return freq, cooc


def popular_negatives(present: set[str], freq: Counter, k: int) -> list[str]:
    ranked = sorted(CATEGORIES, key=lambda c: (-freq[c], c))
    return [c for c in ranked if c not in present][:k]


def adversarial_negatives(present: set[str], freq: Counter, cooc: Counter, k: int) -> list[str]:
    def score(c: str) -> int:
        return sum(cooc[(p, c)] for p in present)

    ranked = sorted(CATEGORIES, key=lambda c: (-score(c), -freq[c], c))
    return [c for c in ranked if c not in present][:k]


def random_negatives(present: set[str], rng: np.random.Generator, k: int) -> list[str]:
    absent = [c for c in CATEGORIES if c not in present]
    return [absent[int(j)] for j in rng.choice(len(absent), size=k, replace=False)]


def question(category: str) -> str:
    return f"Is there {vocab.article(category)} {category} in the image?"


def build_pope(task_dir: Path, scenes: list[Scene], seed: int, stream: int, k: int = POPE_K) -> dict:
    freq, cooc = statistics(scenes)
    rows = {split: [] for split in SPLITS}
    for i, scene in enumerate(scenes):
        rng = scene_rng(seed, stream, i)
        present = scene.categories()
        ordered = sorted(present)
        positives = [ordered[int(j)] for j in rng.choice(len(ordered), size=k, replace=False)]
        negatives = {
            "random": random_negatives(present, rng, k),
            "popular": popular_negatives(present, freq, k),
            "adversarial": adversarial_negatives(present, freq, cooc, k),
        }
        for split in SPLITS:
            for pos, neg in zip(positives, negatives[split]):
                for cat, label in ((pos, "yes"), (neg, "no")):
                    rows[split].append({"question_id": len(rows[split]) + 1, "image": scene.image,
                                        "text": question(cat), "label": label})
    files = {f"labels_{s}": f"coco/coco_pope_{s}.json" for s in SPLITS}
    files["llava_questions"] = "llava_pope_test.jsonl"
    llava = []
    for s_index, split in enumerate(SPLITS):
        write_jsonl(task_dir / files[f"labels_{split}"], rows[split])
        llava += [{"question_id": (s_index + 1) * 1_000_000 + r["question_id"], "image": r["image"],
                   "text": r["text"] + vocab.SHORT_ANSWER, "category": split} for r in rows[split]]
    write_jsonl(task_dir / files["llava_questions"], llava)
    return {"files": files, "questions": len(llava), "per_split": {s: len(rows[s]) for s in SPLITS}}
