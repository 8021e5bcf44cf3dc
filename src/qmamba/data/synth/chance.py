"""Chance levels of the six micro-benchmarks, computed from the generated files.

Each figure is what a model that ignores the image can score, in [0, 1], with the task's metric:

* ``vqav2``, ``vizwiz``, ``textvqa``: the VQA accuracy (leave-one-out ``min(1, matches/3)`` over
  the 10 answers) of always giving the set's most frequent answer (VQAv2: most frequent
  ``multiple_choice_answer``; VizWiz / TextVQA: most frequent majority answer). Ground truth is
  normalised as each official scorer does (VQAv2: only when the 10 answers disagree; VizWiz:
  never; TextVQA: always); the normalisation here is the part that matters for these answers
  (case, punctuation, articles, number words).
* ``gqa``: exact-match accuracy of always giving the most frequent answer (balanced questions).
* ``pope``: accuracy of always giving the majority label over the three splits (0.5: balanced;
  always "yes" has F1 2/3).
* ``mmbench``: CircularEval accuracy of a uniform random guesser, exactly: the mean over questions
  of (1/n)^n for n options (1/4, 1/27, 1/256). Any constant letter scores 0.

At the default settings (seed 0, 200 images per set) the levels are: vqav2 28.3%, gqa 20.6%,
vizwiz 24.5%, textvqa 7.2%, pope 50.0%, mmbench 13.4%; they move by a few points with the seed
(vqav2 25.8-29.8%, gqa 20.0-21.6%, vizwiz 21-24.5%, textvqa 7.2-9.2%, mmbench 11.5-13.4% over
seeds 0-3), so read them from the data.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

from qmamba.data.synth import vocab
from qmamba.data.synth.manifest import SynthManifest

_ARTICLES = {"a", "an", "the"}
_NUMBERS = {w: str(i) for i, w in enumerate(vocab.NUMBER_WORDS)} | {"none": "0"}


def normalise(answer: str) -> str:
    """Lower-case, punctuation and articles dropped, number words to digits."""
    words = re.sub(r"[^\w\s']", " ", answer.lower()).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_accuracy(prediction: str, answers: list[str], normalise_gt: bool) -> float:
    """The VQA leave-one-out accuracy of one prediction against 10 answers."""
    if normalise_gt:
        answers, prediction = [normalise(a) for a in answers], normalise(prediction)
    matches = [a == prediction for a in answers]
    total = sum(matches)
    return sum(min(1.0, (total - m) / 3.0) for m in matches) / len(answers)


def _constant_vqa(answer_lists: list[list[str]], prediction: str, mode: str) -> float:
    """``mode``: "vqav2" (normalise when GT disagrees), "vizwiz" (never), "textvqa" (always)."""
    scores = [vqa_accuracy(prediction, ans, {"vqav2": len(set(ans)) > 1, "vizwiz": False, "textvqa": True}[mode])
              for ans in answer_lists]
    return sum(scores) / max(len(scores), 1)


def _majority(answers: list[str]) -> str:
    return Counter(answers).most_common(1)[0][0]


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def vqav2_chance(m: SynthManifest) -> float:
    anns = _load(m.path("eval", "vqav2", "annotations"))["annotations"]
    best = _majority([a["multiple_choice_answer"] for a in anns])
    return _constant_vqa([[x["answer"] for x in a["answers"]] for a in anns], best, "vqav2")


def gqa_chance(m: SynthManifest) -> float:
    entries = [e for e in _load(m.path("eval", "gqa", "questions")).values() if e["isBalanced"]]
    best = _majority([e["answer"] for e in entries])
    return sum(e["answer"] == best for e in entries) / len(entries)


def vizwiz_chance(m: SynthManifest) -> float:
    lists = [[x["answer"] for x in r["answers"]] for r in _load(m.path("eval", "vizwiz", "annotations"))]
    return _constant_vqa(lists, _majority([_majority(ans) for ans in lists]), "vizwiz")


def textvqa_chance(m: SynthManifest) -> float:
    lists = [r["answers"] for r in _load(m.path("eval", "textvqa", "annotations"))["data"]]
    return _constant_vqa(lists, _majority([_majority([normalise(a) for a in ans]) for ans in lists]), "textvqa")


def pope_chance(m: SynthManifest) -> float:
    labels = [r["label"] for split in ("random", "popular", "adversarial")
              for r in _read_jsonl(m.path("eval", "pope", f"labels_{split}"))]
    return Counter(labels).most_common(1)[0][1] / len(labels)


def mmbench_chance(m: SynthManifest) -> float:
    with open(m.path("eval", "mmbench", "tsv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    n_options = [sum(bool(r[k]) for k in "ABCD") for r in rows if int(r["index"]) < 1_000_000]
    return sum((1.0 / n) ** n for n in n_options) / len(n_options)


CHANCE = {"vqav2": vqav2_chance, "gqa": gqa_chance, "vizwiz": vizwiz_chance, "textvqa": textvqa_chance,
          "pope": pope_chance, "mmbench": mmbench_chance}


def chance_levels(manifest: SynthManifest | str | Path) -> dict[str, float]:
    """Task name -> chance level in [0, 1] (see the module docstring for each metric)."""
    m = manifest if isinstance(manifest, SynthManifest) else SynthManifest.load(manifest)
    return {task: fn(m) for task, fn in CHANCE.items() if task in m.eval_tasks}
