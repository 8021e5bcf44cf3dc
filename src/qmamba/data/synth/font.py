"""A hand-drawn 5x7 bitmap font (digits and capital letters) for the rendered text objects.

Drawn for this project so that text renders identically everywhere, with no font file and no
FreeType: each glyph is 7 rows of 5 cells, scaled by an integer factor (nearest neighbour) to
fit its grid cell. The zero carries a slash so that "0" and "O" differ.
"""

from __future__ import annotations

import numpy as np

from qmamba.errors import ConfigError

GLYPH_W, GLYPH_H, GAP = 5, 7, 1

_GLYPHS = {
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "###.. #..#. #...# #...# #...# #..#. ###..",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
}

GLYPHS: dict[str, np.ndarray] = {
    ch: np.array([[c == "#" for c in row] for row in rows.split()], dtype=bool)  # (7, 5)
    for ch, rows in _GLYPHS.items()
}


def text_bitmap(text: str, scale: int = 1) -> np.ndarray:
    """The boolean ink mask of ``text`` at an integer ``scale``: (7*scale, (6*len-1)*scale)."""
    unknown = sorted(set(text) - set(GLYPHS))
    if unknown:
        raise ConfigError(f"text {text!r}: no glyph for {unknown}; the font has 0-9 and A-Z only")
    cols = []
    for i, ch in enumerate(text):
        if i:
            cols.append(np.zeros((GLYPH_H, GAP), dtype=bool))
        cols.append(GLYPHS[ch])
    mask = np.concatenate(cols, axis=1)  # (7, 6*len-1)
    return np.kron(mask, np.ones((scale, scale), dtype=bool))


def fit_scale(text: str, box: int) -> int:
    """The largest integer scale at which ``text`` fits a ``box`` x ``box`` square (at least 1)."""
    width = len(text) * (GLYPH_W + GAP) - GAP
    scale = min(box // width, box // GLYPH_H)
    if scale < 1:
        raise ConfigError(
            f"text {text!r} needs {width}x{GLYPH_H} px but a cell leaves only {box} px: "
            "use a larger image_size or a smaller grid"
        )
    return scale
