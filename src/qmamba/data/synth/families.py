"""The registry of question families and the sampler that draws questions from a weighted mix.

Yes/no families take a ``want`` answer from a shared ``Alternator`` so that every set (and the
finetune data) is balanced between "yes" and "no" to within one question.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from qmamba.data.synth import questions as q
from qmamba.data.synth import relations as r
from qmamba.data.synth.questions import Question
from qmamba.data.synth.scene import Scene

Family = Callable[[Scene, np.random.Generator, "bool | None"], "Question | None"]  # (scene, rng, want)

FAMILIES: dict[str, Family] = {
    "exist": q.exist,
    "count": q.count,
    "query_color": q.query_color,
    "query_shape": q.query_shape,
    "query_size": q.query_size,
    "query_position": q.query_position,
    "read_text": q.read_text,
    "choose_color": q.choose_color,
    "choose_shape": q.choose_shape,
    "choose_size": q.choose_size,
    "verify_color": q.verify_color,
    "unanswerable": q.unanswerable,
    "verify_rel": r.verify_rel,
    "choose_rel": r.choose_rel,
    "same_attr": r.same_attr,
    "logic_or": r.logic_or,
    "logic_and": r.logic_and,
}

BINARY = frozenset({"exist", "verify_color", "verify_rel", "same_attr", "logic_or", "logic_and"})


class Alternator:
    """Hands out yes, no, yes, ... (the next value only once a question has used it)."""

    def __init__(self, start: bool = True) -> None:
        self.value = start

    def advance(self) -> None:
        self.value = not self.value


def sample_questions(
    scene: Scene,
    rng: np.random.Generator,
    mix: dict[str, float],
    n: int,
    wants: Alternator | None = None,
    taken: set[str] | None = None,
) -> list[Question]:
    """Up to ``n`` questions with distinct texts, families drawn from ``mix`` (name -> weight)."""
    unknown = sorted(set(mix) - set(FAMILIES))
    if unknown:
        raise KeyError(f"unknown question families {unknown}; known: {sorted(FAMILIES)}")
    names = sorted(mix)
    p = np.array([mix[k] for k in names], dtype=np.float64)
    p /= p.sum()
    taken = set() if taken is None else taken
    out: list[Question] = []
    for _ in range(20 * n):
        if len(out) == n:
            break
        family = names[int(rng.choice(len(names), p=p))]
        binary = family in BINARY and wants is not None
        question = FAMILIES[family](scene, rng, wants.value if binary else None)
        if question is None or question.text in taken:
            continue
        if binary:
            wants.advance()
        taken.add(question.text)
        out.append(question)
    return out
