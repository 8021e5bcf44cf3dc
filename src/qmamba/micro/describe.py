"""Prose descriptions of a scene graph, for the LM's pretraining text (no randomness: one scene, one text).

    describe_scene(scene) ->
        "There are 2 objects: a large red circle at the top left and the number 7 in blue at the center.
         The top left cell holds a large red circle. The top cell is empty. ... The large red circle is
         above the number 7 in blue. The large red circle is to the left of the number 7 in blue."

The sentences use the generator's own words (``object_phrase``, ``position_name``, the relations of
``vocab.RELATIONS`` on grid cells), so the LM meets in prose every fact the questions ask about.
"""

from __future__ import annotations

from qmamba.data.synth.language import caption, object_phrase
from qmamba.data.synth.scene import Scene, SceneObject
from qmamba.data.synth.vocab import position_name


def _the(obj: SceneObject) -> str:
    """"the large red circle" / "the number 7 in blue"."""
    phrase = object_phrase(obj)
    return "the " + phrase.split(" ", 1)[1] if phrase.startswith(("a ", "an ")) else phrase


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def cell_sentences(scene: Scene) -> list[str]:
    """One sentence per grid cell, in reading order: what it holds, or that it is empty."""
    out = []
    for row in range(scene.grid):
        for col in range(scene.grid):
            obj = scene.at(row, col)
            where = position_name(row, col, scene.grid)
            out.append(f"The {where} cell holds {object_phrase(obj)}." if obj else f"The {where} cell is empty.")
    return out


def relation_sentences(scene: Scene) -> list[str]:
    """For each pair of objects (a before b in reading order): a is above b / to the left or right of b."""
    out = []
    objs = scene.objects
    for i, a in enumerate(objs):
        for b in objs[i + 1:]:
            if a.row < b.row:
                out.append(f"{_cap(_the(a))} is above {_the(b)}.")
            if a.col != b.col:
                side = "to the left of" if a.col < b.col else "to the right of"
                out.append(f"{_cap(_the(a))} is {side} {_the(b)}.")
    return out


def describe_scene(scene: Scene) -> str:
    """The detailed caption, then the cells, then the pairwise relations, as one paragraph."""
    return " ".join([caption(scene, detailed=True), *cell_sentences(scene), *relation_sentences(scene)])
