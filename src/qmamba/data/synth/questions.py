"""Question families about single objects, each a function ``(scene, rng, want) -> Question | None``.

Families (templates; answers are lower-case canonical strings):

* ``exist``          "Is there a red circle in the image?"                 -> yes / no
* ``count``          "How many red circles are there?" ("objects", "numbers", "words" too) -> "0".."9"
* ``query_color``    "What color is the large square?"                      -> red
* ``query_shape``    "What shape is the object at the top left?"           -> circle
* ``query_size``     "What size is the red circle?"                         -> small / large
* ``query_position`` "Where is the blue triangle?"                          -> top left / top / center ...
* ``read_text``      "What is written at the center?", "What number is written in the image?",
                     "What does the red text say?"                          -> cat / 7
* ``choose_color``   "Is the circle red or blue?"                           -> red
* ``choose_shape``   "Is the red object a circle or a square?"              -> circle
* ``choose_size``    "Is the red circle small or large?"                    -> small
* ``verify_color``   "Is the circle red?"                                   -> yes / no
* ``unanswerable``   "What color is the triangle?" with no triangle, "What is written at the top?"
                     over an empty cell or a shape                          -> unanswerable

A referring expression ("the red circle") always picks out exactly one object and never names the
attribute asked about; ``unanswerable`` questions use expressions that pick out none. ``want``
forces the answer of yes/no families (for balanced sets); other families ignore it. A family
returns None when the scene cannot support it (e.g. ``read_text`` without text).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmamba.data.synth import vocab
from qmamba.data.synth.language import (
    Filter,
    absent_filter,
    desc_phrase,
    matching,
    near_miss,
    plural_phrase,
    ref_phrase,
    refer,
)
from qmamba.data.synth.scene import Scene, SceneObject


@dataclass(frozen=True)
class Question:
    """One question with its canonical answer and the labels the evaluation formats need."""

    text: str
    answer: str
    family: str
    answer_type: str  # VQA/VizWiz: "yes/no" | "number" | "other" | "unanswerable"
    structural: str  # GQA: "query" | "verify" | "logical" | "compare" | "choose"
    semantic: str  # GQA: "obj" | "attr" | "rel"
    qtype: str  # VQA question_type (the question's opening words)


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def pick(rng: np.random.Generator, items: list | tuple):
    return items[int(rng.integers(len(items)))] if len(items) else None


def want_of(rng: np.random.Generator, want: bool | None) -> bool:
    return bool(rng.random() < 0.5) if want is None else want


def shapes_of(scene: Scene) -> list[SceneObject]:
    return [o for o in scene.objects if o.shape is not None]


def present_filter(obj: SceneObject, rng: np.random.Generator) -> Filter | None:
    """A category that ``obj`` belongs to, for existence questions (words are not asked about)."""
    if obj.text is not None:
        return Filter(text=obj.text) if obj.text.isdigit() else None
    forms = [Filter(shape=obj.shape), Filter(shape=obj.shape, color=obj.color),
             Filter(shape=obj.shape, color=obj.color, size=obj.size), Filter(color=obj.color)]
    return pick(rng, forms)


def absent_desc_filter(scene: Scene, rng: np.random.Generator) -> Filter | None:
    """An absent category; half of the time a near miss of a present object."""
    shape_objs = shapes_of(scene)
    if shape_objs and rng.random() < 0.5:
        flt = near_miss(scene, pick(rng, shape_objs), rng)
        if flt is not None:
            return flt
    return absent_filter(scene, rng, exclude=("cell",))


def exist(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    if want_of(rng, want):
        flt = present_filter(pick(rng, scene.objects), rng)
    else:
        flt = absent_desc_filter(scene, rng)
    if flt is None:
        return None
    answer = yes_no(bool(matching(scene, flt)))
    return Question(f"Is there {desc_phrase(flt)} in the image?", answer, "exist", "yes/no", "verify", "obj",
                    "is there a")


def count(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    obj = pick(rng, scene.objects)
    form = pick(rng, ["all", "shape", "color", "shape_color", "kind"])
    if form == "kind":
        kind = vocab.text_kind(obj.text) if obj.text is not None else pick(rng, ["number", "word"])
        flt = Filter(kind=kind)
    elif form == "all":
        flt = Filter()
    else:
        shape = obj.shape if obj.shape and rng.random() < 0.75 else pick(rng, vocab.SHAPES)
        color = obj.color if rng.random() < 0.75 else pick(rng, vocab.COLOR_NAMES)
        flt = Filter(shape=shape if "shape" in form else None, color=color if "color" in form else None)
    n = len(matching(scene, flt))
    return Question(f"How many {plural_phrase(flt)} are there?", str(n), "count", "number", "query", "obj",
                    "how many")


def _query(scene, rng, attr: str, objs: list[SceneObject]) -> tuple[SceneObject, str] | None:
    obj = pick(rng, objs)
    ref = refer(scene, obj, rng, exclude=(attr,)) if obj is not None else None
    return None if ref is None else (obj, ref)


def query_color(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    found = _query(scene, rng, "color", list(scene.objects))
    if found is None:
        return None
    obj, ref = found
    return Question(f"What color is {ref}?", obj.color, "query_color", "other", "query", "attr",
                    "what color is the")


def query_shape(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    found = _query(scene, rng, "shape", shapes_of(scene))
    if found is None:
        return None
    obj, ref = found
    return Question(f"What shape is {ref}?", obj.shape, "query_shape", "other", "query", "attr",
                    "what shape is the")


def query_size(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    found = _query(scene, rng, "size", shapes_of(scene))
    if found is None:
        return None
    obj, ref = found
    return Question(f"What size is {ref}?", obj.size, "query_size", "other", "query", "attr", "what size is the")


def query_position(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    found = _query(scene, rng, "cell", list(scene.objects))
    if found is None:
        return None
    obj, ref = found
    return Question(f"Where is {ref}?", scene.position(obj), "query_position", "other", "query", "rel",
                    "where is the")


def read_text(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    texts = [o for o in scene.objects if o.text is not None]
    obj = pick(rng, texts)
    if obj is None:
        return None
    kind = vocab.text_kind(obj.text)
    options = [(f"What is written at the {scene.position(obj)}?", "what is written")]
    if sum(vocab.text_kind(o.text) == kind for o in texts) == 1:
        options.append((f"What {kind} is written in the image?", f"what {kind} is"))
    if sum(o.color == obj.color for o in texts) == 1:
        options.append((f"What does the {obj.color} text say?", "what does the"))
    text, qtype = pick(rng, options)
    answer_type = "number" if kind == "number" else "other"
    return Question(text, obj.text.lower(), "read_text", answer_type, "query", "attr", qtype)


def choose_color(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    found = _query(scene, rng, "color", list(scene.objects))
    if found is None:
        return None
    obj, ref = found
    other = pick(rng, [c for c in vocab.COLOR_NAMES if c != obj.color])
    a, b = (obj.color, other) if rng.random() < 0.5 else (other, obj.color)
    return Question(f"Is {ref} {a} or {b}?", obj.color, "choose_color", "other", "choose", "attr", "is the")


def choose_shape(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    found = _query(scene, rng, "shape", shapes_of(scene))
    if found is None:
        return None
    obj, ref = found
    other = pick(rng, [s for s in vocab.SHAPES if s != obj.shape])
    a, b = (obj.shape, other) if rng.random() < 0.5 else (other, obj.shape)
    text = f"Is {ref} {vocab.article(a)} {a} or {vocab.article(b)} {b}?"
    return Question(text, obj.shape, "choose_shape", "other", "choose", "attr", "is the")


def choose_size(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    found = _query(scene, rng, "size", shapes_of(scene))
    if found is None:
        return None
    obj, ref = found
    a, b = ("small", "large") if rng.random() < 0.5 else ("large", "small")
    return Question(f"Is {ref} {a} or {b}?", obj.size, "choose_size", "other", "choose", "attr", "is the")


def verify_color(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    found = _query(scene, rng, "color", list(scene.objects))
    if found is None:
        return None
    obj, ref = found
    yes = want_of(rng, want)
    color = obj.color if yes else pick(rng, [c for c in vocab.COLOR_NAMES if c != obj.color])
    return Question(f"Is {ref} {color}?", yes_no(yes), "verify_color", "yes/no", "verify", "attr", "is the")


_UNANSWERABLE = (
    ("color", "What color is {}?", "what color is the"),
    ("shape", "What shape is {}?", "what shape is the"),
    ("size", "What size is {}?", "what size is the"),
    ("cell", "Where is {}?", "where is the"),
)


def unanswerable(scene: Scene, rng: np.random.Generator, want: bool | None = None) -> Question | None:
    """A question about an object that is not there (or text that is not there)."""
    if rng.random() < 0.2:
        free = [(r, c) for r in range(scene.grid) for c in range(scene.grid)
                if scene.at(r, c) is None or scene.at(r, c).text is None]
        cell = pick(rng, free)
        if cell is None:
            return None
        text = f"What is written at the {vocab.position_name(*cell, scene.grid)}?"
        return Question(text, vocab.UNANSWERABLE, "unanswerable", "unanswerable", "query", "attr", "what is written")
    attr, template, qtype = pick(rng, _UNANSWERABLE)
    flt = absent_filter(scene, rng, exclude=(attr,))
    if flt is None:
        return None
    return Question(template.format(ref_phrase(flt, scene.grid)), vocab.UNANSWERABLE, "unanswerable",
                    "unanswerable", "query", "attr", qtype)
