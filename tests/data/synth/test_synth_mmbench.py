"""MMBench circular copies rotate options and answers consistently."""

from __future__ import annotations

import collections
import csv

import pytest

from qmamba.data.synth.choice import Choice


@pytest.fixture(scope="module")
def groups(world):
    with open(world.path("eval", "mmbench", "tsv"), newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = collections.defaultdict(dict)
    for r in rows:
        index = int(r["index"])
        out[index % 1_000_000][index // 1_000_000] = r
    return out


def _options(row: dict) -> list[str]:
    return [row[k] for k in "ABCD" if row[k]]


def test_circular_copies_rotate(groups):
    assert len(groups) >= 30
    sizes = collections.Counter()
    for g, copies in groups.items():
        base = copies[0]
        n = len(_options(base))
        sizes[n] += 1
        assert sorted(copies) == list(range(n)), f"group {g}: copies {sorted(copies)} for {n} options"
        truth = _options(base)["ABCD".index(base["answer"])]
        for k, row in copies.items():
            opts = _options(row)
            assert opts == [_options(base)[(j + k) % n] for j in range(n)], (g, k)
            assert opts["ABCD".index(row["answer"])] == truth, (g, k)
            assert row["question"] == base["question"] and row["image"] == base["image"]
            assert row["category"] == base["category"] and row["hint"] == base["hint"]
    assert set(sizes) == {2, 3, 4}, sizes


def test_answer_positions_vary(groups):
    letters = collections.Counter(copies[0]["answer"] for copies in groups.values())
    assert len(letters) >= 3, letters


def test_categories(groups):
    cats = collections.Counter((c[0]["category"], c[0]["l2-category"]) for c in groups.values())
    assert len({c for c, _ in cats}) >= 4 and len({l2 for _, l2 in cats}) >= 2, cats


def test_rotation_unit():
    c = Choice("q?", ("a", "b", "c"), 1, "OCR")
    assert [c.rotated(k).options for k in range(3)] == [("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b")]
    assert [c.rotated(k).answer_letter for k in range(3)] == ["B", "A", "C"]
    suffix = "\nAnswer with the option's letter from the given choices directly."
    assert c.rotated(2).prompt().endswith("\nA. c\nB. a\nC. b" + suffix)
