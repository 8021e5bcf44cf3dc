"""Words for scene-graph things: filters, referring expressions, descriptions and captions.

A ``Filter`` selects objects by attributes; the same filter is phrased three ways:

* reference (definite):   "the red circle", "the large square", "the number 7", "the red object",
  "the object at the top left" -- only used when exactly one object matches (or none, for the
  questions answered "unanswerable");
* description (indefinite): "a red circle", "an orange object", "a number 7";
* plural: "red circles", "crosses", "objects", "numbers", "words".

"object" covers every object, text objects included; a shape word covers shape objects only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from qmamba.data.synth import vocab
from qmamba.data.synth.scene import Scene, SceneObject


@dataclass(frozen=True)
class Filter:
    """Attributes an object must have (None = any). ``kind`` is "number" or "word" for text."""

    shape: str | None = None
    color: str | None = None
    size: str | None = None
    text: str | None = None
    kind: str | None = None
    cell: tuple[int, int] | None = None

    def matches(self, obj: SceneObject) -> bool:
        if self.kind is not None and (obj.text is None or vocab.text_kind(obj.text) != self.kind):
            return False
        return all(
            getattr(self, name) is None or getattr(self, name) == value
            for name, value in (("shape", obj.shape), ("color", obj.color), ("size", obj.size),
                                ("text", obj.text), ("cell", (obj.row, obj.col)))
        )

    def uses(self) -> set[str]:
        return {f.name for f in fields(self) if getattr(self, f.name) is not None}


def matching(scene: Scene, flt: Filter) -> list[SceneObject]:
    return [o for o in scene.objects if flt.matches(o)]


def noun(flt: Filter) -> str:
    """ "large red circle", "number 7", "red object" (not for cell filters)."""
    words = [w for w in (flt.size, flt.color) if w]
    if flt.text is not None:
        words.append(f"{vocab.text_kind(flt.text)} {flt.text}")
    else:
        words.append(flt.shape or flt.kind or "object")
    return " ".join(words)


def ref_phrase(flt: Filter, grid: int) -> str:
    if flt.cell is not None:
        return f"the object at the {vocab.position_name(*flt.cell, grid)}"
    return f"the {noun(flt)}"


def desc_phrase(flt: Filter) -> str:
    n = noun(flt)
    return f"{vocab.article(n)} {n}"


def plural_phrase(flt: Filter) -> str:
    head = vocab.PLURALS[flt.shape] if flt.shape else (f"{flt.kind}s" if flt.kind else "objects")
    return " ".join([w for w in (flt.size, flt.color) if w] + [head])


def object_filters(obj: SceneObject) -> list[Filter]:
    """Every way of pointing at ``obj`` (unique or not)."""
    cell = Filter(cell=(obj.row, obj.col))
    if obj.text is not None:
        return [Filter(text=obj.text), Filter(color=obj.color), cell]
    s, c, z = obj.shape, obj.color, obj.size
    return [Filter(shape=s), Filter(shape=s, color=c), Filter(shape=s, size=z),
            Filter(shape=s, color=c, size=z), Filter(color=c), cell]


def refer(scene: Scene, obj: SceneObject, rng: np.random.Generator, exclude: tuple[str, ...] = ()) -> str | None:
    """A referring expression that picks out ``obj`` alone, not naming the ``exclude`` attributes."""
    options = [f for f in object_filters(obj)
               if not f.uses() & set(exclude) and len(matching(scene, f)) == 1]
    if not options:
        return None
    return ref_phrase(options[int(rng.integers(len(options)))], scene.grid)


def random_filter(rng: np.random.Generator, grid: int, form: tuple[str, ...]) -> Filter:
    """A filter with random values for the attributes in ``form``."""
    values = {
        "shape": lambda: vocab.SHAPES[int(rng.integers(len(vocab.SHAPES)))],
        "color": lambda: vocab.COLOR_NAMES[int(rng.integers(len(vocab.COLOR_NAMES)))],
        "size": lambda: vocab.SIZES[int(rng.integers(2))],
        "cell": lambda: (int(rng.integers(grid)), int(rng.integers(grid))),
    }
    return Filter(**{name: values[name]() for name in form})


ABSENT_FORMS = (("shape",), ("shape", "color"), ("shape", "size"), ("shape", "color", "size"), ("color",), ("cell",))


def absent_filter(scene: Scene, rng: np.random.Generator, exclude: tuple[str, ...] = ()) -> Filter | None:
    """A filter that matches no object of the scene (for "unanswerable" and "no" questions)."""
    forms = [f for f in ABSENT_FORMS if not set(f) & set(exclude)]
    for _ in range(30):
        flt = random_filter(rng, scene.grid, forms[int(rng.integers(len(forms)))])
        if not matching(scene, flt):
            return flt
    return None


def near_miss(scene: Scene, obj: SceneObject, rng: np.random.Generator) -> Filter | None:
    """An absent category one attribute away from a present shape object (a hard negative)."""
    if obj.shape is None:
        return None
    for _ in range(10):
        if rng.random() < 0.5:
            flt = Filter(shape=obj.shape, color=vocab.COLOR_NAMES[int(rng.integers(len(vocab.COLOR_NAMES)))])
        else:
            flt = Filter(shape=vocab.SHAPES[int(rng.integers(len(vocab.SHAPES)))], color=obj.color)
        if not matching(scene, flt):
            return flt
    return None


def object_phrase(obj: SceneObject) -> str:
    """Caption words for one object: "a large red circle", "the number 7 in blue"."""
    if obj.text is not None:
        return f"the {vocab.text_kind(obj.text)} {obj.text} in {obj.color}"
    n = f"{obj.size} {obj.color} {obj.shape}"
    return f"{vocab.article(n)} {n}"


def join_items(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption(scene: Scene, detailed: bool) -> str:
    """A caption listing every object in reading order (with positions when ``detailed``)."""
    if detailed:
        items = [f"{object_phrase(o)} at the {scene.position(o)}" for o in scene.objects]
        n = len(scene.objects)
        head = "There is 1 object" if n == 1 else f"There are {n} objects"
        return f"{head}: {join_items(items)}."
    text = join_items([object_phrase(o) for o in scene.objects])
    return text[0].upper() + text[1:] + "."

