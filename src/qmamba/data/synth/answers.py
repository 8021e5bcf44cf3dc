"""Ten "human" answers per question, as VQAv2 / VizWiz / TextVQA annotations carry.

At least ``min_agree`` (default 7) of the ten answers are the canonical answer verbatim; the
others are what annotators also say: number words ("2" / "two", "0" / "none"), case variants
("CAT"), synonyms ("upper left", "big", "round"), articles ("a circle") and, for yes/no, a
dissenting vote. With >= 4 exact copies, the canonical answer scores 1.0 under the VQA
leave-one-out metric whether or not the scorer normalises the ground truth (VizWiz does not).
"""

from __future__ import annotations

import numpy as np

from qmamba.data.synth import vocab

_SYNONYMS = {
    "small": ["little", "tiny", "small one"],
    "large": ["big", "huge", "large one"],
    "circle": ["round", "a circle", "circle shape"],
    "square": ["a square", "box", "rectangle"],
    "triangle": ["a triangle", "triangular"],
    "diamond": ["a diamond", "rhombus"],
    "cross": ["a cross", "plus", "plus sign"],
    "left": ["on the left", "to the left"],
    "right": ["on the right", "to the right"],
    "above": ["over", "on top"],
    "below": ["under", "beneath"],
    "center": ["middle", "in the center", "centre"],
    "yes": ["no"],
    "no": ["yes"],
    "unanswerable": ["unsuitable", "unsuitable image"],
}


def variants(answer: str) -> list[str]:
    """Other strings annotators give for ``answer`` (may be empty)."""
    if answer.isdigit():
        word = vocab.number_word(int(answer))
        extra = ["none", "zero", "no"] if answer == "0" else []
        return ([word] if word else []) + extra
    if answer in _SYNONYMS:
        return list(_SYNONYMS[answer])
    if answer in vocab.COLOR_NAMES:
        return [f"dark {answer}", f"light {answer}", f"{answer} color"]
    if answer.upper() in vocab.WORDS:
        return [answer.upper(), answer.capitalize(), f"{answer} sign"]
    if any(answer.startswith(p) for p in ("top", "bottom", "middle", "row")) or answer in ("left", "right"):
        return [answer.replace("top", "upper").replace("bottom", "lower"), f"{answer} corner", f"at {answer}"]
    return []


def human_answers(answer: str, rng: np.random.Generator, n: int = 10, min_agree: int = 7) -> list[str]:
    """``n`` answers: at least ``min_agree`` are ``answer`` itself, the rest its variants."""
    others = variants(answer)
    agree = n if not others else int(rng.integers(min_agree, n + 1))
    answers = [answer] * agree + [others[int(rng.integers(len(others)))] for _ in range(n - agree)]
    return [answers[int(k)] for k in rng.permutation(n)]


def confidences(rng: np.random.Generator, n: int = 10) -> list[str]:
    """Annotator confidence labels ("yes" mostly, some "maybe")."""
    return ["maybe" if rng.random() < 0.15 else "yes" for _ in range(n)]
