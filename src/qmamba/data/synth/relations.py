"""Question families about two objects or two categories (GQA's verify / choose / compare / logical).

* ``verify_rel``  "Is the red circle to the left of the blue square?"      -> yes / no
                  (relations: "to the left of", "to the right of", "above", "below", on grid cells:
                  A is left of B iff A's column < B's column, whatever the rows; likewise above)
* ``choose_rel``  "Is the red circle to the left or to the right of the square?" -> left / right,
                  "Is the circle above or below the number 7?"              -> above / below
* ``same_attr``   "Are the circle and the number 7 the same color?" (color / shape / size) -> yes / no
* ``logic_or``    "Is there a red circle or a blue square?"                  -> yes / no
* ``logic_and``   "Are there both a red circle and a blue square?"           -> yes / no
"""

from __future__ import annotations

import numpy as np

from qmamba.data.synth import vocab
from qmamba.data.synth.language import desc_phrase, matching, refer
from qmamba.data.synth.questions import (
    Question,
    absent_desc_filter,
    pick,
    present_filter,
    shapes_of,
    want_of,
    yes_no,
)
from qmamba.data.synth.scene import Scene, SceneObject


def holds(a: SceneObject, b: SceneObject, relation: str) -> bool:
    """Whether ``a`` is ``relation`` ``b`` on the grid."""
    return {
        "to the left of": a.col < b.col,
        "to the right of": a.col > b.col,
        "above": a.row < b.row,
        "below": a.row > b.row,
    }[relation]


def _pair(scene: Scene, rng: np.random.Generator, objs: list[SceneObject], exclude: tuple[str, ...]):
    """Two distinct objects and a referring expression for each (None if impossible)."""
    if len(objs) < 2:
        return None
    i, j = (int(k) for k in rng.choice(len(objs), size=2, replace=False))
    a, b = objs[i], objs[j]
    ra, rb = refer(scene, a, rng, exclude), refer(scene, b, rng, exclude)
    return None if ra is None or rb is None else (a, b, ra, rb)


def verify_rel(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    found = _pair(scene, rng, list(scene.objects), ("cell",))
    if found is None:
        return None
    a, b, ra, rb = found
    yes = want_of(rng, want)
    relation = pick(rng, [r for r in vocab.RELATIONS if holds(a, b, r) == yes])
    if relation is None:
        return None
    return Question(f"Is {ra} {relation} {rb}?", yes_no(yes), "verify_rel", "yes/no", "verify", "rel", "is the")


def choose_rel(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    found = _pair(scene, rng, list(scene.objects), ("cell",))
    if found is None:
        return None
    a, b, ra, rb = found
    horizontal = a.col != b.col and (a.row == b.row or rng.random() < 0.5)
    if horizontal:
        answer = "left" if a.col < b.col else "right"
        first, second = ("left", "right") if rng.random() < 0.5 else ("right", "left")
        text = f"Is {ra} to the {first} or to the {second} of {rb}?"
    else:
        answer = "above" if a.row < b.row else "below"
        first, second = ("above", "below") if rng.random() < 0.5 else ("below", "above")
        text = f"Is {ra} {first} or {second} {rb}?"
    return Question(text, answer, "choose_rel", "other", "choose", "rel", "is the")


def same_attr(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    attr = pick(rng, ["color", "shape", "size"])
    objs = list(scene.objects) if attr == "color" else shapes_of(scene)
    yes = want_of(rng, want)
    pairs = [(a, b) for a in objs for b in objs if a.id < b.id and (getattr(a, attr) == getattr(b, attr)) == yes]
    if not pairs:
        return None
    a, b = pairs[int(rng.integers(len(pairs)))]
    if rng.random() < 0.5:
        a, b = b, a
    ra, rb = refer(scene, a, rng, (attr,)), refer(scene, b, rng, (attr,))
    if ra is None or rb is None:
        return None
    return Question(f"Are {ra} and {rb} the same {attr}?", yes_no(yes), "same_attr", "yes/no", "compare", "attr",
                    "are the")


def _present_desc(scene: Scene, rng: np.random.Generator, avoid: str | None = None):
    for _ in range(10):
        flt = present_filter(pick(rng, scene.objects), rng)
        if flt is not None and desc_phrase(flt) != avoid:
            return flt
    return None


def _absent_desc(scene: Scene, rng: np.random.Generator, avoid: str | None = None):
    for _ in range(10):
        flt = absent_desc_filter(scene, rng)
        if flt is not None and desc_phrase(flt) != avoid:
            return flt
    return None


def logic_or(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    yes = want_of(rng, want)
    first = _present_desc(scene, rng) if yes else _absent_desc(scene, rng)
    if first is None:
        return None
    second_present = yes and rng.random() < 0.5
    avoid = desc_phrase(first)
    second = _present_desc(scene, rng, avoid) if second_present else _absent_desc(scene, rng, avoid)
    if second is None:
        return None
    d1, d2 = (avoid, desc_phrase(second)) if rng.random() < 0.5 else (desc_phrase(second), avoid)
    answer = yes_no(bool(matching(scene, first) or matching(scene, second)))
    return Question(f"Is there {d1} or {d2}?", answer, "logic_or", "yes/no", "logical", "obj", "is there a")


def logic_and(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    yes = want_of(rng, want)
    first = _present_desc(scene, rng)
    if first is None:
        return None
    avoid = desc_phrase(first)
    second = _present_desc(scene, rng, avoid) if yes else _absent_desc(scene, rng, avoid)
    if second is None:
        return None
    d1, d2 = (avoid, desc_phrase(second)) if rng.random() < 0.5 else (desc_phrase(second), avoid)
    answer = yes_no(bool(matching(scene, first) and matching(scene, second)))
    return Question(f"Are there both {d1} and {d2}?", answer, "logic_and", "yes/no", "logical", "obj", "are there")
