"""Drawing styles: the plain style is the default world; other styles vary the drawing but not the content;
a held-out style writes every evaluation set again, in the same formats, with the same questions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qmamba.data.synth import synthesize
from qmamba.data.synth.cli import main
from qmamba.data.synth.pipeline import TASK_NAMES
from qmamba.data.synth.render import render_scene
from qmamba.data.synth.scene import Scene, SceneSpec, sample_scene, scene_rng
from qmamba.data.synth.style import STYLES, DrawStyle
from qmamba.errors import ConfigError

SIZES = {"n_align": 6, "n_finetune": 6, "n_eval": 4}


def _without_images(path):
    """The file's text; for MMBench's TSV, without its column of base64 images."""
    if path.suffix != ".tsv":
        return path.read_bytes()
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name != "image"]
    assert len(keep) == len(rows[0]) - 1
    return [[row[i] for i in keep] for row in rows]


def test_the_plain_style_samples_the_default_scenes():
    for i in range(20):
        a = sample_scene(scene_rng(1, 2, i), SceneSpec(), "x.jpg")
        b = sample_scene(scene_rng(1, 2, i), SceneSpec(style=STYLES["plain"]), "x.jpg")
        assert a == b and a.look is None and "look" not in a.to_dict()


def test_a_varied_style_keeps_objects_in_their_cells_and_round_trips():
    spec = SceneSpec(image_size=96, grid=4, max_objects=10, style=STYLES["varied"])
    looks = set()
    for i in range(60):
        scene = sample_scene(scene_rng(0, 1, i), spec, "x.png")
        assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene
        looks.add(scene.look.outline is not None)
        for o in scene.objects:
            c = 96 // 4
            x0, y0 = o.col * c, o.row * c
            assert x0 <= o.bbox[0] <= o.bbox[2] < x0 + c and y0 <= o.bbox[1] <= o.bbox[3] < y0 + c, o
        pixels = np.asarray(render_scene(scene))
        for o in scene.objects:
            if o.shape is not None:  # the centre pixel carries the palette colour, outlined or not
                from qmamba.data.synth.vocab import COLORS
                assert tuple(pixels[o.center[1], o.center[0]]) == COLORS[o.color]
    assert looks == {True, False}  # some scenes outlined, some not


def test_style_settings_are_checked():
    with pytest.raises(ConfigError, match="size_jitter"):
        DrawStyle("x", size_jitter=0.3)
    with pytest.raises(ConfigError, match="ceiling"):
        DrawStyle("x", background=(200, 240))


def test_a_heldout_style_writes_every_set_again_with_the_same_questions(tmp_path):
    m = synthesize(tmp_path / "w", seed=0, style="varied", heldout_style="light", **SIZES)
    assert m.config["style"] == "varied" and m.heldout_styles == ["light"]
    light = m.styled("light")
    assert light.eval_tasks == list(TASK_NAMES)
    for task in TASK_NAMES:
        ours, theirs = m.path("eval", task, "dir"), light.path("eval", task, "dir")
        assert theirs.parent.name == "eval-light" and ours.parent.name == "eval"
        names = sorted(p.name for p in ours.iterdir() if p.is_file() and p.name != "scenes.json")
        assert names == sorted(p.name for p in theirs.iterdir() if p.is_file() and p.name != "scenes.json")
        for name in names:  # official files and question files are identical: only the pixels differ
            assert _without_images(ours / name) == _without_images(theirs / name), (task, name)
        a = json.loads(m.path("eval", task, "scenes").read_text())
        b = json.loads(light.path("eval", task, "scenes").read_text())
        assert [s["objects"] for s in a] == [s["objects"] for s in b]
        assert all(s["look"]["style"] == "light" and min(s["background"]) >= 150 - 8 for s in b)
        assert all(max(s["background"]) <= 95 + 8 for s in a)  # training-style shades never reach the held-out range
    train = json.loads(m.path("scenes", "finetune").read_text())
    assert all(s["look"]["style"] == "varied" for s in train)
    with pytest.raises(ConfigError, match="held-out style 'dark'"):
        m.styled("dark")


def test_the_heldout_style_must_differ_and_the_cli_writes_it(tmp_path, capsys):
    with pytest.raises(ConfigError, match="training style"):
        synthesize(tmp_path / "a", style="light", heldout_style="light", **SIZES)
    assert main(["--out", str(tmp_path / "b"), "--n-align", "4", "--n-finetune", "4", "--n-eval", "3",
                 "--heldout-style", "light", "--no-progress", "--grid", "4", "--image-size", "96",
                 "--max-objects", "9", "--min-objects", "3"]) == 0
    assert "eval-light" in capsys.readouterr().out
    assert (tmp_path / "b" / "eval-light" / "pope" / "coco" / "coco_pope_random.json").is_file()
