"""Drawing styles: how a scene graph is drawn, separately from what it contains.

A ``DrawStyle`` sets the background shade range and tint, the noise, how much object sizes vary around
their size class, whether objects may sit anywhere in their cell (offsets from the grid's centres), and
how often shapes get an outline. ``STYLES["plain"]`` is the default world's drawing, bit for bit: a scene
sampled with it (or with no style) consumes the generator exactly as before styles existed, and carries no
``Look``. Other styles draw their extra choices after the plain ones and record them in the scene's ``Look``.

A *held-out style* is a style never used for training scenes; ``restyle`` redraws an evaluation scene's
background, noise and outline in it while keeping every object where it was, so each held-out-style image
has an in-style twin with the same questions (``pipeline.synthesize(heldout_style=...)``).

Invariant kept by every style: objects are drawn in their exact palette colour and background pixels (with
their noise) are greys clipped to ``ceiling`` <= 230, below palette white (240); every other palette colour
has a channel >= 150 and one <= 90, so objects and background never collide.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from qmamba.errors import ConfigError

NOISE_CEILING = 110  # the plain style's clip: every palette colour has a channel >= 150


@dataclass(frozen=True)
class DrawStyle:
    """How scenes are drawn. ``background``: grey shade range (inclusive); ``tint``: per-channel offset
    range around it; ``noise``: Gaussian sigma range when a scene is noisy; ``size_jitter``: a shape's
    radius is scaled by a uniform factor in [1 - j, 1 + j] (j <= 0.15 keeps small and large apart);
    ``free_offset``: a shape may touch its cell's border instead of keeping a 1-px margin;
    ``outline_prob``: chance that a scene's shapes are outlined, in a grey from ``outline_shades``;
    ``ceiling``: background pixels are clipped to it."""

    name: str = "plain"
    background: tuple[int, int] = (30, 70)
    tint: int = 6
    noise: tuple[float, float] = (2.0, 6.0)
    size_jitter: float = 0.0
    free_offset: bool = False
    outline_prob: float = 0.0
    outline_shades: tuple[int, int] = (0, 0)
    ceiling: int = NOISE_CEILING

    def __post_init__(self) -> None:
        lo, hi = self.background
        if not 0 <= lo <= hi or hi + self.tint > self.ceiling or self.ceiling > 230:
            raise ConfigError(f"style {self.name!r}: background {self.background} + tint {self.tint} must fit "
                              f"under ceiling {self.ceiling} <= 230 (white objects are 240)")
        if not 0 <= self.size_jitter <= 0.15:
            raise ConfigError(f"style {self.name!r}: size_jitter {self.size_jitter} must be in [0, 0.15], "
                              f"so small and large shapes never overlap in size")

    @property
    def plain(self) -> bool:
        """Whether this is the default world's drawing (no ``Look`` is recorded)."""
        return dataclasses.replace(self, name="plain") == DrawStyle()


@dataclass(frozen=True)
class Look:
    """The per-scene drawing choices of a non-plain style: its name, outline grey (None: no outline), clip."""

    style: str
    outline: tuple[int, int, int] | None
    ceiling: int

    @classmethod
    def from_dict(cls, d: dict | None) -> Look | None:
        if d is None:
            return None
        return cls(d["style"], None if d["outline"] is None else tuple(d["outline"]), d["ceiling"])


STYLES: dict[str, DrawStyle] = {
    "plain": DrawStyle(),
    # the small tier's training drawing: wider dark shades, stronger noise, sizes and offsets vary, outlines
    "varied": DrawStyle("varied", background=(10, 95), tint=8, noise=(2.0, 10.0), size_jitter=0.15,
                        free_offset=True, outline_prob=0.4, outline_shades=(120, 200)),
    # held out: a light background (never below 150 in training styles' shades) with dark outlines
    "light": DrawStyle("light", background=(150, 205), tint=8, noise=(2.0, 8.0), size_jitter=0.15,
                       free_offset=True, outline_prob=0.5, outline_shades=(0, 60), ceiling=225),
}


def get_style(name: str | DrawStyle | None) -> DrawStyle:
    if name is None:
        return STYLES["plain"]
    if isinstance(name, DrawStyle):
        return name
    if name not in STYLES:
        raise ConfigError(f"unknown drawing style {name!r}; known: {', '.join(STYLES)}")
    return STYLES[name]


def draw_background(rng: np.random.Generator, style: DrawStyle, noise_prob: float):
    """(background rgb, noise sigma, noise seed, look) of one scene; the plain style's draws, in its order."""
    gray = int(rng.integers(style.background[0], style.background[1] + 1))
    tint = style.tint
    background = tuple(int(np.clip(gray + t, 0, 255)) for t in rng.integers(-tint, tint + 1, size=3))
    noise = 0.0 if rng.random() >= noise_prob else round(float(rng.uniform(*style.noise)), 2)
    noise_seed = int(rng.integers(2**31))
    if style.plain:
        return background, noise, noise_seed, None
    outline = None
    if rng.random() < style.outline_prob:
        shade = int(rng.integers(style.outline_shades[0], style.outline_shades[1] + 1))
        outline = (shade, shade, shade)
    return background, noise, noise_seed, Look(style.name, outline, style.ceiling)


def restyle(scene, style: DrawStyle, rng: np.random.Generator, noise_prob: float):
    """``scene`` with its background, noise and outline redrawn in ``style``; objects unchanged."""
    background, noise, noise_seed, look = draw_background(rng, style, noise_prob)
    return dataclasses.replace(scene, background=background, noise=noise, noise_seed=noise_seed, look=look)
