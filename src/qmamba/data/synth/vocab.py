"""The micro-world's vocabulary: shapes, colours, sizes, rendered text and grid positions.

Everything a question or caption can name is listed here once. Answers are always lower-case,
free of punctuation, articles and number words, so the VQA answer normalisation leaves them
unchanged (an oracle that answers with the canonical string scores 100% under every scorer).

Attribute frequencies are deliberately skewed (``COLOR_WEIGHTS``, ``SHAPE_WEIGHTS``) so that
POPE's "popular" negatives (most frequent absent categories) differ from its "random" ones.
"""

from __future__ import annotations

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
SHAPE_WEIGHTS = (0.28, 0.24, 0.2, 0.15, 0.13)
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles",
           "diamond": "diamonds", "cross": "crosses"}

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 210, 40),
    "white": (240, 240, 240),
    "orange": (245, 140, 30),
    "purple": (150, 70, 210),
}
COLOR_NAMES = tuple(COLORS)
COLOR_WEIGHTS = (0.22, 0.18, 0.16, 0.13, 0.12, 0.1, 0.09)

SIZES = ("small", "large")
# Radius of a shape as a fraction of the cell side.
SIZE_RADIUS = {"small": 0.24, "large": 0.40}

NUMBERS = tuple("0123456789")
WORDS = ("CAT", "DOG", "SUN", "CAR", "BUS", "HAT", "KEY", "PEN", "CUP", "MAP")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")

RELATIONS = ("to the left of", "to the right of", "above", "below")

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
VIZWIZ_SUFFIX = ("\nWhen the provided information is insufficient, respond with 'Unanswerable'."
                 "\nAnswer the question using a single word or phrase.")
MC_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
OCR_PREFIX = "\nReference OCR token: "
UNANSWERABLE = "unanswerable"

_ROW_NAMES = {2: ("top", "bottom"), 3: ("top", "middle", "bottom")}
_COL_NAMES = {2: ("left", "right"), 3: ("left", "middle", "right")}


def position_name(row: int, col: int, grid: int) -> str:
    """Words for a grid cell: "top left", "top", "center", ... ("row 2 column 3" beyond 3x3)."""
    if grid not in _ROW_NAMES:
        return f"row {row + 1} column {col + 1}"
    r, c = _ROW_NAMES[grid][row], _COL_NAMES[grid][col]
    if r == "middle" and c == "middle":
        return "center"
    if r == "middle":
        return c
    if c == "middle":
        return r
    return f"{r} {c}"


def position_names(grid: int) -> list[str]:
    """All cell names of a grid in reading order."""
    return [position_name(r, c, grid) for r in range(grid) for c in range(grid)]


def article(phrase: str) -> str:
    """The indefinite article for a noun phrase."""
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def text_kind(text: str) -> str:
    """"number" for digit strings, "word" otherwise."""
    return "number" if text.isdigit() else "word"


def number_word(n: int) -> str | None:
    """"two" for 2 (0..10), else None."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else None
