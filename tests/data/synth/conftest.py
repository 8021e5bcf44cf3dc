"""A small micro-world generated once per test session (about a second on 2 CPU cores)."""

from __future__ import annotations

import json

import pytest

from qmamba.data.synth import synthesize

SMALL = {"n_align": 40, "n_finetune": 150, "n_eval": 40}


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The manifest of a seed-0 micro-world of ``SMALL`` size."""
    return synthesize(tmp_path_factory.mktemp("world"), seed=0, **SMALL)


@pytest.fixture(scope="session")
def scenes_by_image(world):
    """(split or task) -> image name -> scene graph dict."""
    out = {}
    for split in ("align", "finetune"):
        out[split] = {s["image"]: s for s in json.loads(world.path("scenes", split).read_text())}
    for task in world.eval_tasks:
        out[task] = {s["image"]: s for s in json.loads(world.path("eval", task, "scenes").read_text())}
    return out
