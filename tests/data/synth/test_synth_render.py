"""Scene graph <-> pixels: colours at object centres, text ink inside its box, clean background.

Exact checks on a lossless (PNG) world; nearest-palette checks on the default (JPEG) world.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image
from synth_oracle import read_json

from qmamba.data.synth import synthesize
from qmamba.data.synth.font import GLYPHS, text_bitmap
from qmamba.data.synth.render import encode_image, render_scene
from qmamba.data.synth.scene import Scene
from qmamba.data.synth.vocab import COLORS

SPLITS = [("scenes", "finetune"), ("eval", "textvqa", "scenes"), ("eval", "pope", "scenes")]
PALETTE = np.array(list(COLORS.values()))  # (7, 3)


@pytest.fixture(scope="module")
def png_world(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("png"), seed=1, n_align=10, n_finetune=40, n_eval=20,
                      image_format="png")


def _pixels(world, keys, scene) -> np.ndarray:
    folder = world.path("images") if keys[0] == "scenes" else world.path("eval", keys[1], "image_folder")
    return np.asarray(Image.open(folder / scene["image"]).convert("RGB")).astype(int)  # (h, w, 3)


def test_palette_is_distinct():
    for (a, ca), (b, cb) in itertools.combinations(COLORS.items(), 2):
        assert np.abs(np.subtract(ca, cb)).max() >= 60, f"{a} {ca} and {b} {cb} are too close"
    assert all(max(c) >= 150 for c in COLORS.values())


@pytest.mark.parametrize("keys", SPLITS, ids=lambda k: k[1])
def test_object_pixels_match_graph_exactly(png_world, keys):
    checked = {"shape": 0, "text": 0}
    for scene in read_json(png_world.path(*keys)):
        px = _pixels(png_world, keys, scene)
        assert px.shape == (scene["image_size"], scene["image_size"], 3)
        ink = np.zeros(px.shape[:2], dtype=bool)
        for o in scene["objects"]:
            x0, y0, x1, y1 = o["bbox"]
            in_box = (px[y0:y1 + 1, x0:x1 + 1] == COLORS[o["color"]]).all(-1)
            if o["kind"] == "shape":
                cx, cy = o["center"]
                assert (px[cy, cx] == COLORS[o["color"]]).all(), f"{scene['image']}: centre of {o} is {px[cy, cx]}"
                assert in_box.mean() > 0.3, f"{scene['image']}: {o['shape']} fills {in_box.mean():.2f} of its box"
            else:
                scale = (y1 - y0 + 1) // 7
                assert (in_box == text_bitmap(o["text"], scale)).all(), f"{scene['image']}: text {o}"
            ink[y0:y1 + 1, x0:x1 + 1] |= in_box
            checked[o["kind"]] += 1
        assert px[~ink].max(initial=0) <= 110, f"{scene['image']}: bright pixels outside every object"
    assert checked["shape"] > 20 and checked["text"] > 5, checked


def test_jpeg_centres_are_nearest_to_their_colour(world):
    names = list(COLORS)
    n = 0
    for scene in read_json(world.path("scenes", "finetune")):
        px = _pixels(world, ("scenes",), scene)
        for o in scene["objects"]:
            if o["kind"] == "shape":
                cx, cy = o["center"]
                nearest = names[int(np.abs(PALETTE - px[cy, cx]).sum(-1).argmin())]
                assert nearest == o["color"], f"{scene['image']}: centre of {o} looks {nearest} ({px[cy, cx]})"
                n += 1
    assert n > 100


def test_objects_stay_in_their_cells(world):
    for scene in read_json(world.path("scenes", "finetune")):
        size, grid = scene["image_size"], scene["grid"]
        for o in scene["objects"]:
            r, c = o["cell"]
            x0, y0, x1, y1 = o["bbox"]
            assert c * size // grid <= x0 and x1 < (c + 1) * size // grid, (scene["image"], o)
            assert r * size // grid <= y0 and y1 < (r + 1) * size // grid, (scene["image"], o)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_render_is_a_function_of_the_graph(world, png_world, fmt):
    m = png_world if fmt == "png" else world
    for scene in read_json(m.path("scenes", "align"))[:10]:
        data = encode_image(render_scene(Scene.from_dict(scene)), fmt)
        assert data == (m.path("images") / scene["image"]).read_bytes(), scene["image"]


def test_glyphs_are_distinct():
    bitmaps = {ch: g.tobytes() for ch, g in GLYPHS.items()}
    assert len(set(bitmaps.values())) == len(bitmaps)
    assert all(g.shape == (7, 5) for g in GLYPHS.values())
    assert text_bitmap("CAT", 2).shape == (14, 34)
