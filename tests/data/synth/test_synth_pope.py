"""POPE splits are balanced and their negatives follow POPE's random / popular / adversarial definitions,
recomputed here from the scene graphs."""

from __future__ import annotations

import collections
import itertools
import re

import pytest
from synth_oracle import read_json, read_jsonl

SPLITS = ("random", "popular", "adversarial")


def _category(text: str) -> str:
    return re.fullmatch(r"Is there an? (\w+ \w+) in the image\?", text)[1]


@pytest.fixture(scope="module")
def pope(world):
    scenes = read_json(world.path("eval", "pope", "scenes"))
    present = {s["image"]: {f"{o['color']} {o['shape']}" for o in s["objects"] if o["shape"]} for s in scenes}
    freq = collections.Counter(c for cats in present.values() for c in cats)
    cooc = collections.Counter(p for cats in present.values() for p in itertools.permutations(cats, 2))
    labels = {s: read_jsonl(world.path("eval", "pope", f"labels_{s}")) for s in SPLITS}
    return present, freq, cooc, labels


def _per_image(rows):
    out = collections.defaultdict(lambda: {"yes": [], "no": []})
    for r in rows:
        out[r["image"]][r["label"]].append(_category(r["text"]))
    return out


def test_balanced_and_truthful(pope):
    present, _, _, labels = pope
    for split, rows in labels.items():
        per_image = _per_image(rows)
        assert set(per_image) == set(present), split
        for image, qa in per_image.items():
            assert len(qa["yes"]) == len(qa["no"]) == 3, (split, image)
            assert set(qa["yes"]) <= present[image], (split, image, qa)
            assert not set(qa["no"]) & present[image], (split, image, qa)
            assert len(set(qa["yes"] + qa["no"])) == 6


def test_popular_negatives_are_the_most_frequent_absent(pope):
    present, freq, _, labels = pope
    all_categories = {f"{c} {s}" for c in ("red", "green", "blue", "yellow", "white", "orange", "purple")
                      for s in ("circle", "square", "triangle", "diamond", "cross")}
    ranked = sorted(all_categories, key=lambda c: (-freq[c], c))
    for image, qa in _per_image(labels["popular"]).items():
        assert qa["no"] == [c for c in ranked if c not in present[image]][:3], image


def test_adversarial_negatives_co_occur_most(pope):
    present, freq, cooc, labels = pope
    all_categories = sorted({c for r in labels["random"] for c in [_category(r["text"])]} | set(freq))
    for image, qa in _per_image(labels["adversarial"]).items():
        absent = [c for c in all_categories if c not in present[image]]
        score = {c: sum(cooc[(p, c)] for p in present[image]) for c in absent}
        chosen = [score[c] for c in qa["no"]]
        assert chosen == sorted(chosen, reverse=True), image
        others = [score[c] for c in absent if c not in qa["no"]]
        assert min(chosen) >= max(others, default=0), (image, qa["no"], chosen, max(others))


def test_random_negatives_are_not_the_popular_ones(pope):
    _, _, _, labels = pope
    random_no, popular_no = _per_image(labels["random"]), _per_image(labels["popular"])
    same = sum(random_no[i]["no"] == popular_no[i]["no"] for i in random_no)
    assert same < len(random_no) // 4, f"{same} of {len(random_no)} images have popular negatives in 'random'"
    assert len({c for qa in random_no.values() for c in qa["no"]}) > 15  # spread over the categories
