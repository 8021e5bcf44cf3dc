"""Scenes and their ground-truth scene graphs.

A scene is an ``image_size`` x ``image_size`` picture divided into a ``grid`` x ``grid`` board;
each occupied cell holds one object. An object is either a *shape* (shape, colour, size) or a
*text* object (a number "0".."9" or a three-letter word, drawn in a colour, with no shape or
size). The scene graph records, per object: id, cell, position name, centre and inclusive bbox
in pixels, kind, shape, colour, size and text. A scene is a pure description: rendering it
(``render.render_scene``) is a deterministic function of the scene alone.

Every scene is drawn from its own generator ``scene_rng(seed, stream, index, attempt)``, so
scenes are independent of each other and of the order they are made in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from qmamba.data.synth import vocab
from qmamba.data.synth.font import fit_scale, text_bitmap
from qmamba.data.synth.style import DrawStyle, Look, draw_background, get_style
from qmamba.errors import ConfigError

MIN_CELL = 19  # px: a three-letter word (17 px wide) plus a 1-px margin each side


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene graph (``shape``/``size`` are None for text objects)."""

    id: int
    row: int
    col: int
    color: str
    shape: str | None
    size: str | None
    text: str | None
    center: tuple[int, int]
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive

    @property
    def kind(self) -> str:
        return "text" if self.text is not None else "shape"

    @property
    def category(self) -> str | None:
        """POPE's object category: "red circle" (None for text objects)."""
        return None if self.shape is None else f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A scene graph: the image file name, geometry, background and objects in reading order."""

    image: str
    image_size: int
    grid: int
    background: tuple[int, int, int]
    noise: float
    noise_seed: int
    objects: tuple[SceneObject, ...]
    look: Look | None = None  # drawing choices of a non-plain style (``style.Look``); None: the plain style

    def at(self, row: int, col: int) -> SceneObject | None:
        return next((o for o in self.objects if (o.row, o.col) == (row, col)), None)

    def position(self, obj: SceneObject) -> str:
        return vocab.position_name(obj.row, obj.col, self.grid)

    def categories(self) -> set[str]:
        return {o.category for o in self.objects if o.category}

    def signature(self) -> tuple:
        """What makes two scenes the same scene (object placement jitter and background aside)."""
        return (self.grid, tuple((o.row, o.col, o.color, o.shape, o.size, o.text) for o in self.objects))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["background"] = list(self.background)
        d["objects"] = [_object_dict(self, o) for o in self.objects]
        if self.look is None:
            del d["look"]  # plain scenes are written as they were before styles existed
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        objs = tuple(
            SceneObject(o["id"], o["cell"][0], o["cell"][1], o["color"], o["shape"], o["size"], o["text"],
                        tuple(o["center"]), tuple(o["bbox"]))
            for o in d["objects"]
        )
        return cls(d["image"], d["image_size"], d["grid"], tuple(d["background"]), d["noise"],
                   d["noise_seed"], objs, Look.from_dict(d.get("look")))


def _object_dict(scene: Scene, o: SceneObject) -> dict:
    return {"id": o.id, "cell": [o.row, o.col], "position": scene.position(o), "center": list(o.center),
            "bbox": list(o.bbox), "kind": o.kind, "shape": o.shape, "color": o.color, "size": o.size,
            "text": o.text}


@dataclass(frozen=True)
class SceneSpec:
    """How scenes of one stream are sampled."""

    image_size: int = 64
    grid: int = 3
    min_objects: int = 1
    max_objects: int = 5
    text_prob: float = 0.15
    min_text: int = 0
    min_categories: int = 0  # distinct shape categories (POPE needs several)
    noise_prob: float = 0.5
    dominant_prob: float = 0.5  # chance that a scene favours one colour (makes co-occurrence structure)
    style: DrawStyle | None = None  # how scenes are drawn (``style.STYLES``); None: the plain style

    def __post_init__(self) -> None:
        cell = self.image_size // max(self.grid, 1)
        if self.grid < 2 or cell < MIN_CELL:
            raise ConfigError(
                f"image_size {self.image_size} with grid {self.grid} gives {cell}-px cells; text needs "
                f">= {MIN_CELL} px and the grid >= 2: use image_size >= {MIN_CELL * max(self.grid, 2)}"
            )
        cells = self.grid * self.grid
        if not 1 <= self.min_objects <= self.max_objects <= cells:
            raise ConfigError(f"objects per scene: need 1 <= min {self.min_objects} <= max "
                              f"{self.max_objects} <= {cells} cells of a {self.grid}x{self.grid} grid")
        if self.min_text + self.min_categories > self.max_objects:
            raise ConfigError(f"min_text {self.min_text} + min_categories {self.min_categories} "
                              f"exceeds max_objects {self.max_objects}")


def scene_rng(seed: int, stream: int, index: int, attempt: int = 0) -> np.random.Generator:
    """The independent generator of one scene (or of its questions, with another ``stream``)."""
    return np.random.default_rng([seed, stream, index, attempt])


def cell_box(row: int, col: int, image_size: int, grid: int) -> tuple[int, int, int, int]:
    """Pixel bounds (x0, y0, x1, y1), x1/y1 exclusive, of a grid cell."""
    return (col * image_size // grid, row * image_size // grid,
            (col + 1) * image_size // grid, (row + 1) * image_size // grid)


def sample_scene(rng: np.random.Generator, spec: SceneSpec, image: str) -> Scene:
    """Draw a scene: objects, their attributes, placement and the background."""
    for _ in range(200):
        attrs = _sample_attributes(rng, spec)
        if len({(c, s) for c, s, _, t in attrs if t is None}) >= spec.min_categories:
            break
    else:
        raise ConfigError(f"could not draw {spec.min_categories} distinct object categories "
                          f"with at most {spec.max_objects} objects; lower min_categories")
    cells = sorted(int(c) for c in rng.choice(spec.grid * spec.grid, size=len(attrs), replace=False))
    objects = tuple(
        _place(rng, spec, i, divmod(cell, spec.grid), attr) for i, (cell, attr) in enumerate(zip(cells, attrs))
    )
    background, noise, noise_seed, look = draw_background(rng, get_style(spec.style), spec.noise_prob)
    return Scene(image, spec.image_size, spec.grid, background, noise, noise_seed, objects, look)


def _sample_attributes(rng: np.random.Generator, spec: SceneSpec) -> list[tuple]:
    """(colour, shape, size, text) per object; text objects have shape = size = None."""
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    n = max(n, spec.min_text + spec.min_categories)
    n_text = int(np.clip(rng.binomial(n, spec.text_prob), spec.min_text, n - spec.min_categories))
    is_text = np.zeros(n, dtype=bool)
    is_text[rng.permutation(n)[:n_text]] = True
    dominant = _weighted(rng, vocab.COLOR_NAMES, vocab.COLOR_WEIGHTS) if rng.random() < spec.dominant_prob else None
    out = []
    for text_obj in is_text:
        color = dominant if dominant and rng.random() < 0.5 else _weighted(rng, vocab.COLOR_NAMES, vocab.COLOR_WEIGHTS)
        if text_obj:
            pool = vocab.NUMBERS if rng.random() < 0.5 else vocab.WORDS
            out.append((color, None, None, str(pool[int(rng.integers(len(pool)))])))
        else:
            shape = _weighted(rng, vocab.SHAPES, vocab.SHAPE_WEIGHTS)
            out.append((color, shape, vocab.SIZES[int(rng.integers(2))], None))
    return out


def _weighted(rng: np.random.Generator, names: tuple[str, ...], weights: tuple[float, ...]) -> str:
    p = np.asarray(weights, dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _place(rng: np.random.Generator, spec: SceneSpec, i: int, rc: tuple[int, int], attr: tuple) -> SceneObject:
    """Position one object inside its cell, with a little jitter, never touching the cell border."""
    color, shape, size, text = attr
    row, col = rc
    x0, y0, x1, y1 = cell_box(row, col, spec.image_size, spec.grid)
    c = min(x1 - x0, y1 - y0)
    if text is None:
        style = get_style(spec.style)
        scale = 1.0 if style.plain else float(rng.uniform(1 - style.size_jitter, 1 + style.size_jitter))
        r = max(2, int(vocab.SIZE_RADIUS[size] * c * scale))
        j = max(0, (c - 1) // 2 - r - (0 if style.free_offset else 1))
        cx = x0 + (c - 1) // 2 + int(rng.integers(-j, j + 1))
        cy = y0 + (c - 1) // 2 + int(rng.integers(-j, j + 1))
        bbox = (cx - r, cy - r, cx + r, cy + r)
    else:
        h, w = text_bitmap(text, fit_scale(text, c - 2)).shape
        tx = x0 + int(rng.integers(1, c - w)) if c - w > 1 else x0 + 1
        ty = y0 + int(rng.integers(1, c - h)) if c - h > 1 else y0 + 1
        bbox = (tx, ty, tx + w - 1, ty + h - 1)
        cx, cy = (bbox[0] + bbox[2]) // 2, (bbox[1] + bbox[3]) // 2
    return SceneObject(i, row, col, color, shape, size, text, (cx, cy), bbox)
