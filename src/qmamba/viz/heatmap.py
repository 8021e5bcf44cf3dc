"""Heat maps over an image with PIL alone (no plotting library): a grid of labelled square panels.

    panel = overlay(image, values)                   # values (rows, cols) in [0, 1] over the image
    figure = draw_panels([[("block 0", image), ("q 0-3", panel), ...], ...], ["title line", ...])

The figure's size follows from the panel counts alone (``figure_size``), so tests can check the layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PANEL = 160  # default panel side, pixels
GAP = 8  # space between panels and around the figure
LABEL = 14  # height of the label line above each panel
TITLE_LINE = 14  # height of one title line

# an inferno-like colour map: dark (low) -> purple -> red -> orange -> pale yellow (high)
ANCHORS = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], dtype=np.float32)


def colourise(values: np.ndarray) -> np.ndarray:
    """(r, c) values in [0, 1] -> (r, c, 3) uint8 colours of ``ANCHORS``, linearly interpolated."""
    x = np.clip(values, 0.0, 1.0) * (len(ANCHORS) - 1)  # (r, c)
    lo = np.minimum(np.floor(x).astype(int), len(ANCHORS) - 2)
    t = (x - lo)[..., None]  # (r, c, 1)
    return np.round(ANCHORS[lo] * (1 - t) + ANCHORS[lo + 1] * t).astype(np.uint8)  # (r, c, 3)


def overlay(image: Image.Image, values: np.ndarray, size: int = PANEL, alpha: float = 0.7) -> Image.Image:
    """A ``size`` x ``size`` panel: ``values`` (rows, cols) in [0, 1] as colours over the image in grey.

    Each value fills its cell of the grid (nearest neighbour), so a panel shows patches, not a blur.
    """
    grey = np.asarray(image.convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32)  # (S, S)
    heat = Image.fromarray(colourise(values)).resize((size, size), Image.NEAREST)
    mixed = alpha * np.asarray(heat, dtype=np.float32) + (1 - alpha) * grey[..., None]  # (S, S, 3)
    return Image.fromarray(np.round(mixed).astype(np.uint8))


def figure_size(n_rows: int, n_cols: int, n_title_lines: int = 1, panel: int = PANEL) -> tuple[int, int]:
    """(width, height) of ``draw_panels``'s figure for a grid of n_rows x n_cols panels."""
    width = GAP + n_cols * (panel + GAP)
    height = GAP + n_title_lines * TITLE_LINE + n_rows * (LABEL + panel + GAP)
    return width, height


def draw_panels(rows: Sequence[Sequence[tuple[str, Image.Image]]], title: Sequence[str],
                panel: int = PANEL) -> Image.Image:
    """One figure: the title lines, then each row's (label, image) panels left to right, each image resized
    to ``panel`` x ``panel`` under its label. Every row must have the same number of panels."""
    n_cols = {len(row) for row in rows}
    if len(n_cols) != 1:
        raise ValueError(f"draw_panels: rows of different lengths {sorted(n_cols)}")
    width, height = figure_size(len(rows), n_cols.pop(), len(title), panel)
    fig = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(fig)
    font = ImageFont.load_default()
    for i, line in enumerate(title):
        draw.text((GAP, GAP + i * TITLE_LINE), _fit(draw, line, font, width - 2 * GAP), fill="black", font=font)
    top = GAP + len(title) * TITLE_LINE
    for r, row in enumerate(rows):
        y = top + r * (LABEL + panel + GAP)
        for c, (label, image) in enumerate(row):
            x = GAP + c * (panel + GAP)
            draw.text((x, y), _fit(draw, label, font, panel), fill="black", font=font)
            fig.paste(image.convert("RGB").resize((panel, panel), Image.BILINEAR), (x, y + LABEL))
    return fig


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text``, cut short with '..' where it is wider than ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."
