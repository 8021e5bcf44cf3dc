"""The existence drills: every answer true of its scene, yes and no balanced and alternating, negatives drawn
near-miss / popular / random like POPE's splits, deterministic for a generator."""

from __future__ import annotations

import numpy as np

from qmamba.data.synth import vocab
from qmamba.data.synth.existence import (
    POPULAR,
    absent_categories,
    existence_conversation,
    existence_turn,
    existence_turns,
)
from qmamba.data.synth.pope import CATEGORIES, question
from qmamba.data.synth.scene import SceneSpec, sample_scene

SPEC = SceneSpec(min_objects=1, max_objects=5)


def _scenes(n: int = 60):
    rng = np.random.default_rng(3)
    return [sample_scene(rng, SPEC, f"{i}.png") for i in range(n)]


def test_every_answer_is_true_of_the_scene_and_yes_no_balance():
    scenes = _scenes()
    asked, orders = 0, set()
    for i, scene in enumerate(scenes):
        turns = existence_turns(scene, np.random.default_rng(i), k=4)
        by_question = {question(c): c for c in CATEGORIES}
        answers = [a for _, a in turns]
        assert answers.count("yes") == answers.count("no") == min(4, len(scene.categories()))
        orders.add(tuple(answers))
        for q, a in turns:
            assert a == ("yes" if by_question[q] in scene.categories() else "no")
        assert len({q for q, _ in turns}) == len(turns)
        asked += len(turns)
    assert asked > len(scenes)
    # the order of the answers is drawn: not alternating, and no answer guessable from the ones before it
    eight = [o for o in orders if len(o) == 8]
    assert len(eight) >= 5 and any(o[:2] in (("yes", "yes"), ("no", "no")) for o in eight)


def test_negatives_cycle_near_miss_popular_random():
    present = {"red circle", "blue square"}
    out = absent_categories(present, np.random.default_rng(0), 3)
    assert len(set(out)) == 3 and not set(out) & present
    col, shp = out[0].split(" ")
    assert col in ("red", "blue") or shp in ("circle", "square")  # a near miss
    assert out[1] in [c for c in POPULAR if c not in present][:3]  # among the most popular absent


def test_popular_follows_the_generator_weights():
    assert sorted(POPULAR) == sorted(CATEGORIES)
    top = max(vocab.COLOR_NAMES, key=lambda c: vocab.COLOR_WEIGHTS[vocab.COLOR_NAMES.index(c)])
    top_shape = max(vocab.SHAPES, key=lambda s: vocab.SHAPE_WEIGHTS[vocab.SHAPES.index(s)])
    assert POPULAR[0] == f"{top} {top_shape}"
    scenes = _scenes(400)  # and the frequencies in sampled scenes agree: the first beats the last
    count = [sum(c in s.categories() for s in scenes) for c in (POPULAR[0], POPULAR[-1])]
    assert count[0] > 2 * count[1]


def test_single_turn_answers_as_asked():
    by_question = {question(c): c for c in CATEGORIES}
    for i, scene in enumerate(_scenes(40)):
        for want in (True, False):
            turn = existence_turn(scene, np.random.default_rng(i), want)
            if not scene.categories():
                assert turn is None
                continue
            q, a = turn
            assert a == ("yes" if want else "no") and (by_question[q] in scene.categories()) == want


def test_conversation_gives_the_scene_once_and_is_deterministic():
    scene = _scenes(5)[2]
    a = existence_conversation(scene, np.random.default_rng(7), "Image: X")
    b = existence_conversation(scene, np.random.default_rng(7), "Image: X")
    assert a == b and a[0][1].startswith("Image: X\nIs there")
    assert sum("Image: X" in text for _, text in a) == 1
    assert [r for r, _ in a] == ["user", "assistant"] * (len(a) // 2)
