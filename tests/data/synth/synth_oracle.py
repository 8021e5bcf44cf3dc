"""An independent reader of the micro-world's files for the tests: JSON helpers, and a parser of
question text that recomputes the answer from the scene graph JSON alone (it shares no code with
the generator's question makers), to check that every generated answer follows from its graph.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

COLORS = ("red", "green", "blue", "yellow", "white", "orange", "purple")
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
PLURAL = {"circles": "circle", "squares": "square", "triangles": "triangle", "diamonds": "diamond",
          "crosses": "cross"}
POS3 = {"top left": (0, 0), "top": (0, 1), "top right": (0, 2), "left": (1, 0), "center": (1, 1),
        "right": (1, 2), "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2)}
CELL_NAME = {v: k for k, v in POS3.items()}

_C = "|".join(COLORS)
_S = "|".join(SHAPES)
_ATTRS = rf"(?:(?P<size>small|large) )?(?:(?P<color>{_C}) )?(?P<head>{_S}|object)"
REF_RE = re.compile(rf"the (?:object at the (?P<pos>[a-z ]+)|(?P<kind>number|word) (?P<text>[A-Z0-9]+)|{_ATTRS})")
DESC_RE = re.compile(rf"an? (?:(?P<kind>number) (?P<text>[0-9]+)|{_ATTRS})")
_HEADS = "|".join([*PLURAL, "objects", "numbers", "words"])
PLURAL_RE = re.compile(rf"(?:(?P<size>small|large) )?(?:(?P<color>{_C}) )?(?P<head>{_HEADS})")


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


class Unparsed(ValueError):
    """The text does not follow the grammar."""


def _filter_objs(scene: dict, size=None, color=None, shape=None, kind=None, text=None, cell=None) -> list[dict]:
    out = []
    for o in scene["objects"]:
        if shape and o["shape"] != shape or color and o["color"] != color or size and o["size"] != size:
            continue
        if text and o["text"] != text or cell and tuple(o["cell"]) != cell:
            continue
        if kind and (o["text"] is None or o["text"].isdigit() != (kind == "number")):
            continue
        out.append(o)
    return out


def resolve_ref(scene: dict, phrase: str) -> list[dict]:
    m = REF_RE.fullmatch(phrase)
    if not m:
        raise Unparsed(phrase)
    if m["pos"]:
        if m["pos"] not in POS3:
            raise Unparsed(phrase)
        return _filter_objs(scene, cell=POS3[m["pos"]])
    if m["kind"]:
        return _filter_objs(scene, kind=m["kind"], text=m["text"])
    shape = None if m["head"] == "object" else m["head"]
    return _filter_objs(scene, size=m["size"], color=m["color"], shape=shape)


def resolve_desc(scene: dict, phrase: str) -> list[dict]:
    m = DESC_RE.fullmatch(phrase)
    if not m:
        raise Unparsed(phrase)
    if m["kind"]:
        return _filter_objs(scene, kind="number", text=m["text"])
    shape = None if m["head"] == "object" else m["head"]
    return _filter_objs(scene, size=m["size"], color=m["color"], shape=shape)


def resolve_plural(scene: dict, phrase: str) -> list[dict]:
    m = PLURAL_RE.fullmatch(phrase)
    if not m:
        raise Unparsed(phrase)
    head = m["head"]
    kind = head[:-1] if head in ("numbers", "words") else None
    return _filter_objs(scene, size=m["size"], color=m["color"], shape=PLURAL.get(head), kind=kind)


def the_one(scene: dict, phrase: str) -> dict | None:
    """The object a definite reference names; None when absent; an error when ambiguous."""
    objs = resolve_ref(scene, phrase)
    if len(objs) > 1:
        raise AssertionError(f"ambiguous reference {phrase!r}: {len(objs)} objects")
    return objs[0] if objs else None


def yn(b: bool) -> str:
    return "yes" if b else "no"


def rel_holds(a: dict, b: dict, rel: str) -> bool:
    (ra, ca), (rb, cb) = a["cell"], b["cell"]
    return {"to the left of": ca < cb, "left": ca < cb, "to the right of": ca > cb, "right": ca > cb,
            "above": ra < rb, "below": ra > rb}[rel]


def _attr(obj: dict | None, key: str) -> str:
    if obj is None:
        return "unanswerable"
    if key == "position":
        return CELL_NAME[tuple(obj["cell"])]
    if obj[key] is None:
        raise AssertionError(f"asked for the {key} of an object without one: {obj}")
    return obj[key]


def _written(scene: dict, pos: str) -> str:
    objs = _filter_objs(scene, cell=POS3[pos])
    return objs[0]["text"].lower() if objs and objs[0]["text"] else "unanswerable"


def _only_text(scene: dict, kind: str | None = None, color: str | None = None) -> str:
    objs = [o for o in _filter_objs(scene, kind=kind, color=color) if o["text"] is not None]
    assert len(objs) == 1, f"expected one {kind or color} text, found {len(objs)}"
    return objs[0]["text"].lower()


def _choose_rel(scene, a, first, second, b) -> str:
    oa, ob = the_one(scene, a), the_one(scene, b)
    assert {first, second} in ({"left", "right"}, {"above", "below"}), (first, second)
    holds = [r for r in (first, second) if rel_holds(oa, ob, r)]
    assert len(holds) == 1, f"{a} vs {b}: {holds}"
    return holds[0]


def _same(scene, a, b, attr) -> str:
    oa, ob = the_one(scene, a), the_one(scene, b)
    assert oa is not None and ob is not None and oa["id"] != ob["id"]
    return yn(oa[attr] == ob[attr])


def _choose(scene, ref, a, b, key) -> str:
    value = _attr(the_one(scene, ref), key)
    assert value in (a, b) and a != b, (value, a, b)
    return value


# (name, pattern, answer function of the scene and the match groups); first parse wins.
TEMPLATES = [
    ("exist", r"Is there (an? .+) in the image", lambda s, d: yn(bool(resolve_desc(s, d)))),
    ("count", r"How many (.+) are there", lambda s, p: str(len(resolve_plural(s, p)))),
    ("query_color", r"What color is (the .+)", lambda s, r: _attr(the_one(s, r), "color")),
    ("query_shape", r"What shape is (the .+)", lambda s, r: _attr(the_one(s, r), "shape")),
    ("query_size", r"What size is (the .+)", lambda s, r: _attr(the_one(s, r), "size")),
    ("query_position", r"Where is (the .+)", lambda s, r: _attr(the_one(s, r), "position")),
    ("read_pos", r"What is written at the ([a-z ]+)", _written),
    ("read_kind", r"What (number|word) is written in the image", lambda s, k: _only_text(s, kind=k)),
    ("read_color", rf"What does the ({_C}) text say", lambda s, c: _only_text(s, color=c)),
    ("choose_color", rf"Is (the .+) ({_C}) or ({_C})", lambda s, r, a, b: _choose(s, r, a, b, "color")),
    ("choose_shape", rf"Is (the .+) an? ({_S}) or an? ({_S})", lambda s, r, a, b: _choose(s, r, a, b, "shape")),
    ("choose_size", r"Is (the .+) (small|large) or (small|large)", lambda s, r, a, b: _choose(s, r, a, b, "size")),
    ("choose_rel_h", r"Is (the .+) to the (left|right) or to the (left|right) of (the .+)", _choose_rel),
    ("choose_rel_v", r"Is (the .+) (above|below) or (above|below) (the .+)", _choose_rel),
    ("verify_rel", r"Is (the .+) (to the left of|to the right of|above|below) (the .+)",
     lambda s, a, rel, b: yn(rel_holds(the_one(s, a), the_one(s, b), rel))),
    ("verify_color", rf"Is (the .+) ({_C})", lambda s, r, c: yn(_attr(the_one(s, r), "color") == c)),
    ("same_attr", r"Are (the .+) and (the .+) the same (color|shape|size)", _same),
    ("logic_or", r"Is there (an? .+) or (an? .+)",
     lambda s, a, b: yn(bool(resolve_desc(s, a)) or bool(resolve_desc(s, b)))),
    ("logic_and", r"Are there both (an? .+) and (an? .+)",
     lambda s, a, b: yn(bool(resolve_desc(s, a)) and bool(resolve_desc(s, b)))),
]
_COMPILED = [(name, re.compile(pattern + r"\?"), fn) for name, pattern, fn in TEMPLATES]


def answer(scene: dict, question: str) -> tuple[str, str]:
    """(template name, expected canonical answer) of a question (no prompt suffix)."""
    for name, regex, fn in _COMPILED:
        m = regex.fullmatch(question)
        if not m:
            continue
        try:
            return name, fn(scene, *m.groups())
        except Unparsed:
            continue
    raise Unparsed(f"no template parses {question!r}")
