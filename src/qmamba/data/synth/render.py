"""Rendering a scene graph to pixels (PIL + numpy, no anti-aliasing).

The background is a flat grey, optionally with light Gaussian noise (seeded by the scene's
``noise_seed``) kept below 110 in every channel (below the ``Look``'s ceiling for a non-plain drawing
style, whose shapes may also carry a 1-px outline: ``style.py``); objects are drawn in their exact palette colour
(``vocab.COLORS``), every palette colour has a channel >= 150, so an object's pixels and the
background never collide. Shapes are centred on ``obj.center`` and fill ``obj.bbox``; the pixel
at the centre of every shape carries the shape's colour (exactly in PNG; in JPEG within ~20 per
channel, always nearest to the right palette colour). Text is the 5x7 bitmap font of
``font.py`` scaled to fit its cell.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from qmamba.data.synth import vocab
from qmamba.data.synth.font import fit_scale, text_bitmap
from qmamba.data.synth.scene import Scene, SceneObject, cell_box

NOISE_MAX = 110


def render_scene(scene: Scene) -> Image.Image:
    """The RGB image of a scene."""
    size = scene.image_size
    pixels = np.empty((size, size, 3), dtype=np.float64)  # (h, w, 3)
    pixels[:] = scene.background
    if scene.noise > 0:
        pixels += np.random.default_rng(scene.noise_seed).normal(0.0, scene.noise, size=pixels.shape)
    ceiling = NOISE_MAX if scene.look is None else scene.look.ceiling
    pixels = np.clip(np.rint(pixels), 0, ceiling).astype(np.uint8)
    for obj in scene.objects:
        if obj.text is not None:
            _draw_text(pixels, scene, obj)
    image = Image.fromarray(pixels, mode="RGB")
    draw = ImageDraw.Draw(image)
    outline = None if scene.look is None else scene.look.outline
    for obj in scene.objects:
        if obj.shape is not None:
            _draw_shape(draw, obj, outline)
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, obj: SceneObject, outline: tuple | None = None) -> None:
    """One shape; with ``outline`` (a grey), a 1-px border in it (the centre pixel keeps the fill)."""
    x, y = obj.center
    r = (obj.bbox[2] - obj.bbox[0]) // 2
    ink = {"fill": vocab.COLORS[obj.color]} if outline is None else {"fill": vocab.COLORS[obj.color],
                                                                     "outline": outline}
    if obj.shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), **ink)
    elif obj.shape == "square":
        s = max(1, round(r * 0.85))
        draw.rectangle((x - s, y - s, x + s, y + s), **ink)
    elif obj.shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], **ink)
    elif obj.shape == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], **ink)
    elif obj.shape == "cross":
        t = max(1, round(r * 0.3))
        draw.rectangle((x - r, y - t, x + r, y + t), **ink)
        draw.rectangle((x - t, y - r, x + t, y + r), **ink)
    else:  # pragma: no cover - scene sampling only draws known shapes
        raise ValueError(f"unknown shape {obj.shape!r}")


def _draw_text(pixels: np.ndarray, scene: Scene, obj: SceneObject) -> None:
    x0, y0, x1, y1 = cell_box(obj.row, obj.col, scene.image_size, scene.grid)
    mask = text_bitmap(obj.text, fit_scale(obj.text, min(x1 - x0, y1 - y0) - 2))  # (h, w)
    bx, by = obj.bbox[0], obj.bbox[1]
    region = pixels[by:by + mask.shape[0], bx:bx + mask.shape[1]]  # (h, w, 3)
    region[mask] = vocab.COLORS[obj.color]


def encode_image(image: Image.Image, fmt: str = "jpg") -> bytes:
    """Deterministic file bytes of an image ("jpg": quality 95 without chroma subsampling; "png": lossless)."""
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG", compress_level=6)
    else:
        image.save(buf, format="JPEG", quality=95, subsampling=0)
    return buf.getvalue()
