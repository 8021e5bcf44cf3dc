"""POPE-style existence questions: "Is there a red circle in the image?" -> yes / no.

    turns = existence_turns(scene, rng)            # [("Is there a red circle in the image?", "yes"), ...]
    turn = existence_turn(scene, rng, want=True)   # one question whose answer is "yes" (None if impossible)

The skill POPE measures (is this colour + shape among the objects?) is a recall over the whole image that
a small model only learns from many examples. These questions give them: the finetune conversations ask
them (the ``exist`` style of ``conversations``) and the micro LM drills them on scenes given in words
(``qmamba.micro.corpus``). Absent categories are drawn like POPE's three splits, in turn: a near miss
sharing the colour or the shape of a present object (like adversarial sampling), one of the most frequent
categories under the generator's colour and shape weights (like popular sampling), one at random.
"""

from __future__ import annotations

import numpy as np

from qmamba.data.synth import vocab
from qmamba.data.synth.pope import CATEGORIES, question
from qmamba.data.synth.scene import Scene


def _prior(category: str) -> float:
    color, shape = category.split(" ")
    return vocab.COLOR_WEIGHTS[vocab.COLOR_NAMES.index(color)] * vocab.SHAPE_WEIGHTS[vocab.SHAPES.index(shape)]


# every category, the most frequent under the generator's weights first (ties by name)
POPULAR = tuple(sorted(CATEGORIES, key=lambda c: (-_prior(c), c)))


def _near_misses(present: set[str]) -> list[str]:
    """Absent categories sharing the colour or the shape of a present one."""
    parts = [c.split(" ") for c in present]
    return [c for c in CATEGORIES if c not in present
            and any(c.split(" ")[0] == col or c.split(" ")[1] == shp for col, shp in parts)]


def absent_categories(present: set[str], rng: np.random.Generator, k: int, start: int = 0) -> list[str]:
    """``k`` distinct absent categories, cycling near miss -> popular -> random from ``start`` (0, 1, 2)."""
    pools = [_near_misses(present), [c for c in POPULAR if c not in present][:max(k, 3)],
             [c for c in CATEGORIES if c not in present]]
    out: list[str] = []
    for i in range(start, start + 8 * k):
        if len(out) == k:
            break
        pool = [c for c in pools[i % 3] if c not in out]
        if pool:
            out.append(pool[int(rng.integers(len(pool)))])
    return out


def existence_turns(scene: Scene, rng: np.random.Generator, k: int = 4) -> list[tuple[str, str]]:
    """Up to ``k`` "yes" and as many "no" (question, answer) pairs about ``scene``, in a random order: no answer
    follows from the ones before it (alternating answers would let a model answer all but the first without
    reading the scene). Scenes with no shape object give no turns."""
    present = sorted(scene.categories())
    positives = [present[int(j)] for j in rng.permutation(len(present))[:k]]
    negatives = absent_categories(set(present), rng, len(positives))
    turns = [(question(c), "yes") for c in positives] + [(question(c), "no") for c in negatives]
    return [turns[int(j)] for j in rng.permutation(len(turns))]


def existence_turn(scene: Scene, rng: np.random.Generator, want: bool) -> tuple[str, str] | None:
    """One question answered "yes" (``want``) or "no"; None when the scene has no shape object."""
    present = scene.categories()
    if not present:
        return None
    if want:
        ordered = sorted(present)
        return question(ordered[int(rng.integers(len(ordered)))]), "yes"
    return question(absent_categories(present, rng, 1, start=int(rng.integers(3)))[0]), "no"


def existence_conversation(scene: Scene, rng: np.random.Generator, image_words: str,
                           k: int = 4) -> list[tuple[str, str]]:
    """(role, text) turns: the scene in words and the first question, then one question per turn."""
    out: list[tuple[str, str]] = []
    for i, (q, ans) in enumerate(existence_turns(scene, rng, k)):
        prompt = (f"{image_words}\n" if i == 0 else "") + q + vocab.SHORT_ANSWER
        out += [("user", prompt), ("assistant", ans)]
    return out


__all__ = ["POPULAR", "absent_categories", "existence_conversation", "existence_turn", "existence_turns"]
