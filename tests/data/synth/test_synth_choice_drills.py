"""The multiple-choice drills: each letter names the option that is true of the scene (checked by the test
oracle, which reads the scene graph and shares no code with the generator), one question per category in a
conversation, the rotations spread the answer over every letter, deterministic for a generator."""

from __future__ import annotations

import collections
import re

import numpy as np
from synth_oracle import answer, rel_holds, the_one

from qmamba.data.synth import vocab
from qmamba.data.synth.choice import LETTERS, choice_conversation
from qmamba.data.synth.scene import SceneSpec, sample_scene

SPEC = SceneSpec(min_objects=1, max_objects=5)
OPTION = re.compile(r"^([A-D])\. (.+)$")
RELATIVE = re.compile(r"Where is (the .+) relative to (the .+)\?")
SAME_COLOR = re.compile(r"Which object has the same color as (the .+)\?")


def _parse(prompt: str) -> tuple[str, list[str]]:
    lines = prompt.removesuffix(vocab.MC_SUFFIX).split("\n")
    options = [OPTION.match(line)[2] for line in lines if OPTION.match(line)]
    return [line for line in lines if not OPTION.match(line)][-1], options


def _true(scene: dict, question: str, chosen: str) -> bool:
    """Whether option ``chosen`` answers ``question`` about ``scene`` (a scene graph dict)."""
    if m := RELATIVE.fullmatch(question):
        words = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
        return rel_holds(the_one(scene, m[1]), the_one(scene, m[2]), words[chosen])
    if m := SAME_COLOR.fullmatch(question):
        target, pick = the_one(scene, m[1]), the_one(scene, chosen)
        return pick["id"] != target["id"] and pick["color"] == target["color"]
    return answer(scene, question)[1] == chosen.lower()


def test_every_letter_names_a_true_option_and_the_rotations_spread_them():
    rng = np.random.default_rng(5)
    letters, checked = collections.Counter(), 0
    for i in range(80):
        scene = sample_scene(rng, SPEC, f"{i}.png")
        turns = choice_conversation(scene, np.random.default_rng(i), "Image: words", k=3)
        n = len(turns) // 2  # fewer than k when the scene has too few objects for some categories
        assert 1 <= n <= 3 and turns[0][1].startswith("Image: words\n")
        assert [role for role, _ in turns] == ["user", "assistant"] * n
        assert len({_parse(prompt)[0] for _, prompt in turns[::2]}) == n
        for (_, prompt), (_, letter) in zip(turns[::2], turns[1::2]):
            question, options = _parse(prompt)
            assert 2 <= len(options) <= 4 and letter in LETTERS[: len(options)], prompt
            assert _true(scene.to_dict(), question, options[LETTERS.index(letter)]), (prompt, letter)
            assert sum(_true(scene.to_dict(), question, o) for o in options) == 1, prompt
            letters[letter] += 1
            checked += 1
    assert checked >= 160 and set(letters) == set(LETTERS)
    assert letters["A"] < 0.5 * checked  # rotated: the first option is not a safe guess


def test_deterministic_for_a_generator():
    scene = sample_scene(np.random.default_rng(1), SPEC, "a.png")
    first = choice_conversation(scene, np.random.default_rng(7), "w")
    assert first == choice_conversation(scene, np.random.default_rng(7), "w")
    assert first != choice_conversation(scene, np.random.default_rng(8), "w")
