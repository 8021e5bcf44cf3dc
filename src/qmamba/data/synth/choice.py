"""Multiple-choice questions (MMBench style): 2-4 options, exactly one correct.

Categories (MMBench L3 name -> L2 name):

* ``attribute_recognition`` (finegrained_perception (instance-level)): "What color is the square?"
  with colour / shape / size options (size questions always have 2 options);
* ``object_localization`` (instance-level): "Where is the red circle?" with position options;
* ``OCR`` (instance-level): "What is written at the top left?" with text options as rendered;
* ``spatial_relationship`` (finegrained_perception (cross-instance)): "Where is the red circle
  relative to the number 7?" with options among left / right / above / below, exactly one of
  which holds;
* ``attribute_comparison`` (cross-instance): "Which object has the same color as the square?"
  with referring expressions as options, exactly one of the same colour.

No option is a substring of another, so even text-matching answer extraction is unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmamba.data.synth import vocab
from qmamba.data.synth.language import refer
from qmamba.data.synth.questions import pick, shapes_of
from qmamba.data.synth.relations import holds
from qmamba.data.synth.scene import Scene

LETTERS = "ABCD"
INSTANCE = "finegrained_perception (instance-level)"
CROSS = "finegrained_perception (cross-instance)"
CATEGORIES = {
    "attribute_recognition": INSTANCE,
    "object_localization": INSTANCE,
    "OCR": INSTANCE,
    "spatial_relationship": CROSS,
    "attribute_comparison": CROSS,
}
REL_OPTIONS = {"to the left of": "left", "to the right of": "right", "above": "above", "below": "below"}


@dataclass(frozen=True)
class Choice:
    """A multiple-choice question: ``options[answer]`` is the correct one."""

    question: str
    options: tuple[str, ...]
    answer: int
    category: str
    hint: str | None = None

    @property
    def l2_category(self) -> str:
        return CATEGORIES[self.category]

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]

    def rotated(self, k: int) -> Choice:
        """The k-th circular copy: option j is the original option (j + k) mod n."""
        n = len(self.options)
        options = tuple(self.options[(j + k) % n] for j in range(n))
        return Choice(self.question, options, (self.answer - k) % n, self.category, self.hint)

    def prompt(self) -> str:
        """The prompt as LLaVA's model_vqa_mmbench builds it (hint, question, options, suffix)."""
        text = f"{self.hint}\n{self.question}" if self.hint else self.question
        text += "".join(f"\n{LETTERS[j]}. {opt}" for j, opt in enumerate(self.options))
        return text + vocab.MC_SUFFIX


def _attribute(scene: Scene, rng: np.random.Generator):
    attr = pick(rng, ["color", "shape", "size"])
    objs = list(scene.objects) if attr == "color" else shapes_of(scene)
    obj = pick(rng, objs)
    ref = refer(scene, obj, rng, (attr,)) if obj else None
    if ref is None:
        return None
    pool = {"color": vocab.COLOR_NAMES, "shape": vocab.SHAPES, "size": vocab.SIZES}[attr]
    correct = getattr(obj, attr)
    return f"What {attr} is {ref}?", correct, [v for v in pool if v != correct], None


def _localization(scene: Scene, rng: np.random.Generator):
    obj = pick(rng, scene.objects)
    ref = refer(scene, obj, rng, ("cell",))
    if ref is None:
        return None
    correct = scene.position(obj)
    return f"Where is {ref}?", correct, [p for p in vocab.position_names(scene.grid) if p != correct], None


def _ocr(scene: Scene, rng: np.random.Generator):
    obj = pick(rng, [o for o in scene.objects if o.text is not None])
    if obj is None:
        return None
    pool = vocab.NUMBERS if obj.text.isdigit() else vocab.WORDS
    return f"What is written at the {scene.position(obj)}?", obj.text, [t for t in pool if t != obj.text], None


def _grid_hint(scene: Scene) -> str:
    return f"The objects are placed on a {scene.grid}x{scene.grid} grid."


def _spatial(scene: Scene, rng: np.random.Generator):
    if len(scene.objects) < 2:
        return None
    i, j = (int(k) for k in rng.choice(len(scene.objects), size=2, replace=False))
    a, b = scene.objects[i], scene.objects[j]
    ra, rb = refer(scene, a, rng, ("cell",)), refer(scene, b, rng, ("cell",))
    if ra is None or rb is None:
        return None
    true = [REL_OPTIONS[r] for r in vocab.RELATIONS if holds(a, b, r)]
    false = [REL_OPTIONS[r] for r in vocab.RELATIONS if not holds(a, b, r)]
    return f"Where is {ra} relative to {rb}?", pick(rng, true), false, _grid_hint(scene)


def _comparison(scene: Scene, rng: np.random.Generator):
    a = pick(rng, scene.objects)
    same = [o for o in scene.objects if o.id != a.id and o.color == a.color]
    if not same:
        return None
    b = pick(rng, same)
    others = [o for o in scene.objects if o.color != a.color]
    refs = [refer(scene, o, rng, ("color",)) for o in [a, b, *others]]
    if None in refs[:2]:
        return None
    question = f"Which object has the same color as {refs[0]}?"
    return question, refs[1], [r for r in refs[2:] if r is not None], _grid_hint(scene)


_BUILDERS = {
    "attribute_recognition": _attribute,
    "object_localization": _localization,
    "OCR": _ocr,
    "spatial_relationship": _spatial,
    "attribute_comparison": _comparison,
}


def make_choice(scene: Scene, rng: np.random.Generator, category: str | None = None) -> Choice | None:
    """A multiple-choice question of ``category`` (random if None) with 2-4 options, or None."""
    category = category or pick(rng, sorted(_BUILDERS))
    built = _BUILDERS[category](scene, rng)
    if built is None:
        return None
    question, correct, pool, hint = built
    n_options = int(rng.integers(2, 5))
    options = [correct]
    for k in rng.permutation(len(pool)):
        cand = pool[int(k)]
        if len(options) < n_options and not any(cand in o or o in cand for o in options):
            options.append(cand)
    if len(options) < 2:
        return None
    order = [int(k) for k in rng.permutation(len(options))]
    shuffled = tuple(options[k] for k in order)
    return Choice(question, shuffled, order.index(0), category, hint)


def choice_conversation(scene: Scene, rng: np.random.Generator, image_words: str,
                        k: int = 3) -> list[tuple[str, str]]:
    """(role, text) turns of up to ``k`` multiple-choice questions of distinct categories about ``scene``:
    the scene in words before the first, each question in a random circular rotation, answered by its letter."""
    out: list[tuple[str, str]] = []
    for category in [sorted(_BUILDERS)[int(i)] for i in rng.permutation(len(_BUILDERS))]:
        choice = make_choice(scene, rng, category)
        if choice is None:
            continue
        choice = choice.rotated(int(rng.integers(len(choice.options))))
        prompt = (f"{image_words}\n" if not out else "") + choice.prompt()
        out += [("user", prompt), ("assistant", choice.answer_letter)]
        if len(out) == 2 * k:
            break
    return out
