"""Chance levels, recomputed from the files."""

from __future__ import annotations

import collections
import csv

import pytest
from synth_oracle import read_json

from qmamba.data.synth import chance_levels
from qmamba.data.synth.chance import normalise, vqa_accuracy


def test_chance_levels(world):
    chance = chance_levels(world)
    assert set(chance) == {"vqav2", "gqa", "vizwiz", "textvqa", "pope", "mmbench"}
    assert chance["pope"] == 0.5
    with open(world.path("eval", "mmbench", "tsv"), newline="") as f:
        n = [sum(bool(r[k]) for k in "ABCD") for r in csv.DictReader(f, delimiter="\t") if int(r["index"]) < 1e6]
    assert chance["mmbench"] == pytest.approx(sum((1 / k) ** k for k in n) / len(n), abs=1e-12)
    entries = read_json(world.path("eval", "gqa", "questions")).values()
    top = collections.Counter(e["answer"] for e in entries).most_common(1)[0][1]
    assert chance["gqa"] == pytest.approx(top / len(entries))
    assert all(0.0 < v < 0.6 for v in chance.values()), chance


def test_chance_also_takes_a_directory(world):
    assert chance_levels(world.root) == chance_levels(world)


def test_vqa_metric():
    assert vqa_accuracy("2", ["2"] * 3 + ["two"] * 7, normalise_gt=False) == pytest.approx(0.9)
    assert vqa_accuracy("2", ["2"] * 3 + ["two"] * 7, normalise_gt=True) == 1.0
    assert vqa_accuracy("red", ["blue"] * 10, normalise_gt=True) == 0.0
    assert normalise("The Two.") == "2"
