"""A rule-based reader of the micro LM's words: can the questions be answered from the scene in words alone?

The micro LM never sees an image: it reads "Image: There are 3 objects: a large red circle at the row 1
column 2, ..." (``corpus.scene_in_words``) and a question. This oracle reads the same text, parses the objects
back out of it, and answers each question by rule. Its accuracy per question type (``grounding.question_type``)
is the ceiling of what any LM can reach on the words: a type below 100% asks for something the words do not
say (a free choice of the generator, such as a brief or a detailed caption).

Scored: the first question of each grounded document (the build's ``lm_grounded`` gate), every question of the
existence and multiple-choice drills, and the world's MMBench-like set under CircularEval (``lm_mmbench_circular``).

    python benchmarks/micro_oracle.py --world /tmp/world          # qmamba data synth --out /tmp/world ...
    python benchmarks/micro_oracle.py --small 300                 # a small-size world of 300 + 300 images
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
from collections import defaultdict
from pathlib import Path

from qmamba.data.synth import vocab
from qmamba.data.synth.language import Filter, caption, matching
from qmamba.data.synth.relations import holds
from qmamba.data.synth.scene import Scene, SceneObject
from qmamba.micro.corpus import scene_in_words
from qmamba.micro.grounding import question_type, user_message

_PLURAL_SHAPES = {plural: shape for shape, plural in vocab.PLURALS.items()}
_ROW_WORDS = {"top": 0, "middle": 1, "bottom": 2}
_COL_WORDS = {"left": 0, "middle": 1, "right": 2}
_ITEM = re.compile(r"(?:(?:a|an) (?P<size>small|large) (?P<color>\w+) (?P<shape>\w+)"
                   r"|the (?:number|word) (?P<text>\w+) in (?P<tcolor>\w+))"
                   r" at the (?P<pos>[\w ]+?)(?=, |\.$| and (?:a|an|the) )")


# ------------------------------------------------------------------------------------------ parsing the words
def cell_of(position: str) -> tuple[int, int]:
    """(row, col) of a position name ("row 2 column 3", "top left", "center", "bottom", "left", ...); rows and
    columns keep their order whatever the grid, which is all the questions need."""
    m = re.fullmatch(r"row (\d+) column (\d+)", position)
    if m:
        return int(m[1]) - 1, int(m[2]) - 1
    if position == "center":
        return 1, 1
    words = position.split()
    if len(words) == 2:
        return _ROW_WORDS[words[0]], _COL_WORDS[words[1]]
    return (_ROW_WORDS[words[0]], 1) if words[0] in ("top", "bottom") else (1, _COL_WORDS[words[0]])


def parse_words(words: str) -> Scene:
    """The scene that ``scene_in_words`` describes (objects, cells and attributes; no pixels)."""
    text = words.removeprefix("Image: ")
    head, _, body = text.partition(": ")
    objects = []
    for i, m in enumerate(_ITEM.finditer(body)):
        row, col = cell_of(m["pos"])
        if m["text"] is not None:
            objects.append(SceneObject(i, row, col, m["tcolor"], None, None, m["text"], (0, 0), (0, 0, 0, 0)))
        else:
            objects.append(SceneObject(i, row, col, m["color"], m["shape"], m["size"], None, (0, 0), (0, 0, 0, 0)))
    n = int(re.match(r"There (?:is|are) (\d+) object", head)[1])
    if n != len(objects):
        raise ValueError(f"parsed {len(objects)} of {n} objects from {words!r}")
    grid = 4 if "row " in body else 3
    return Scene("", 0, grid, (0, 0, 0), 0.0, 0, tuple(objects))


def position_of(scene: Scene, obj: SceneObject) -> str:
    """The position name as the words gave it."""
    if scene.grid == 4:
        return f"row {obj.row + 1} column {obj.col + 1}"
    return vocab.position_name(obj.row, obj.col, 3)


def parse_phrase(phrase: str) -> Filter:
    """A ``Filter`` from a reference ("the red circle", "the object at the top left", "the number 7"), a
    description ("a red circle", "an object") or a plural ("red circles", "numbers")."""
    phrase = re.sub(r"^(the|a|an) ", "", phrase)
    m = re.fullmatch(r"object at the ([\w ]+)", phrase)
    if m:
        return Filter(cell=cell_of(m[1]))
    m = re.fullmatch(r"(number|word) (\w+)", phrase)
    if m:
        return Filter(text=m[2])
    words = phrase.split()
    head, attrs = words[-1], words[:-1]
    size = next((w for w in attrs if w in vocab.SIZES), None)
    color = next((w for w in attrs if w in vocab.COLOR_NAMES), None)
    shape = head if head in vocab.SHAPES else _PLURAL_SHAPES.get(head)
    kind = {"numbers": "number", "words": "word"}.get(head)
    return Filter(shape=shape, color=color, size=size, kind=kind)


def find(scene: Scene, phrase: str) -> list[SceneObject]:
    flt = parse_phrase(phrase)
    if flt.cell is not None:  # a cell filter in the parsed scene compares the parsed cells
        return [o for o in scene.objects if (o.row, o.col) == flt.cell]
    return matching(scene, flt)


# ------------------------------------------------------------------------------------------------ answering
def _one(scene: Scene, phrase: str) -> SceneObject | None:
    found = find(scene, phrase)
    return found[0] if len(found) == 1 else None


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def answer_question(scene: Scene, question: str) -> str | None:
    """The answer to one open question (its first line), or None when no rule reads it."""
    q = question
    unanswerable = vocab.UNANSWERABLE
    if m := re.fullmatch(r"Is there (.+) or (.+)\?", q):
        return _yes(bool(find(scene, m[1]) or find(scene, m[2])))
    if m := re.fullmatch(r"Is there (.+) in the image\?", q):
        return _yes(bool(find(scene, m[1])))
    if m := re.fullmatch(r"Are there both (.+) and (.+)\?", q):
        return _yes(bool(find(scene, m[1]) and find(scene, m[2])))
    if m := re.fullmatch(r"How many (.+) are there\?", q):
        return str(len(find(scene, m[1])))
    if m := re.fullmatch(r"Are (the .+) and (the .+) the same (color|shape|size)\?", q):
        a, b = _one(scene, m[1]), _one(scene, m[2])
        return None if a is None or b is None else _yes(getattr(a, m[3]) == getattr(b, m[3]))
    if m := re.fullmatch(r"What (color|shape|size) is (.+)\?", q):
        obj = _one(scene, m[2])
        return unanswerable if obj is None else getattr(obj, m[1])
    if m := re.fullmatch(r"Where is (.+)\?", q):
        obj = _one(scene, m[1])
        return unanswerable if obj is None else position_of(scene, obj)
    if m := re.fullmatch(r"What is written at the (.+)\?", q):
        obj = next((o for o in scene.objects if position_of(scene, o) == m[1]), None)
        return unanswerable if obj is None or obj.text is None else obj.text.lower()
    if m := re.fullmatch(r"What (number|word) is written in the image\?", q):
        texts = [o for o in scene.objects if o.text is not None and vocab.text_kind(o.text) == m[1]]
        return texts[0].text.lower() if len(texts) == 1 else None
    if m := re.fullmatch(r"What does the (\w+) text say\?", q):
        texts = [o for o in scene.objects if o.text is not None and o.color == m[1]]
        return texts[0].text.lower() if len(texts) == 1 else None
    if m := re.fullmatch(r"Is (the .+) to the (left|right) or to the (left|right) of (the .+)\?", q):
        a, b = _one(scene, m[1]), _one(scene, m[4])
        return None if a is None or b is None else ("left" if a.col < b.col else "right")
    if m := re.fullmatch(r"Is (the .+) (above|below) or (above|below) (the .+)\?", q):
        a, b = _one(scene, m[1]), _one(scene, m[4])
        return None if a is None or b is None else ("above" if a.row < b.row else "below")
    if m := re.fullmatch(r"Is (the .+) (small|large) or (small|large)\?", q):
        obj = _one(scene, m[1])
        return None if obj is None else obj.size
    if m := re.fullmatch(r"Is (the .+) an? (\w+) or an? (\w+)\?", q):
        obj = _one(scene, m[1])
        return None if obj is None else obj.shape
    if m := re.fullmatch(rf"Is (the .+) ({'|'.join(vocab.COLOR_NAMES)}) or \w+\?", q):
        obj = _one(scene, m[1])
        return None if obj is None else obj.color
    if m := re.fullmatch(rf"Is (the .+?) ({'|'.join(vocab.RELATIONS)}) (the .+)\?", q):
        a, b = _one(scene, m[1]), _one(scene, m[3])
        return None if a is None or b is None else _yes(holds(a, b, m[2]))
    if m := re.fullmatch(rf"Is (the .+) ({'|'.join(vocab.COLOR_NAMES)})\?", q):
        obj = _one(scene, m[1])
        return None if obj is None else _yes(obj.color == m[2])
    return None


def answer_choice(scene: Scene, lines: list[str]) -> str | None:
    """The letter of a multiple-choice question (hint, question, "A. ..." options, suffix)."""
    options = [(line[0], line[3:]) for line in lines if re.match(r"[ABCD]\. ", line)]
    question = next(line for line in lines if not line.startswith("The objects are placed on"))
    if m := re.fullmatch(r"Where is (.+) relative to (.+)\?", question):
        a, b = _one(scene, m[1]), _one(scene, m[2])
        if a is None or b is None:
            return None
        words = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
        good = [letter for letter, opt in options if holds(a, b, words[opt])]
    elif m := re.fullmatch(r"Which object has the same color as (.+)\?", question):
        a = _one(scene, m[1])
        good = [letter for letter, opt in options
                if a is not None and (b := _one(scene, opt)) is not None and b.id != a.id and b.color == a.color]
    else:
        truth = answer_question(scene, question)
        good = [letter for letter, opt in options if truth is not None and opt.lower() == truth.lower()]
    return good[0] if len(good) == 1 else None


def answer(message: str) -> str | None:
    """The oracle's reply to one user message that starts with the scene in words."""
    lines = message.split("\n")
    scene = parse_words(lines[0])
    rest = [line for line in lines[1:] if line]
    if not rest:
        return None
    if rest[0] in _caption_requests():
        return caption(scene, detailed=True)  # the generator writes a brief caption one time in four
    if any(re.match(r"A\. ", line) for line in rest):
        return answer_choice(scene, [line for line in rest if line != vocab.MC_SUFFIX.strip()])
    return answer_question(scene, rest[0])


def _caption_requests() -> tuple[str, ...]:
    from qmamba.data.synth.conversations import CAPTION_REQUESTS

    return CAPTION_REQUESTS


# -------------------------------------------------------------------------------------------------- scoring
def _reply(piece: str) -> str:
    return piece.removesuffix("<|endoftext|>")


def score_documents(docs, first_only_kinds=("grounded",)) -> dict[str, dict[str, dict]]:
    """{document kind: {question type: {"questions", "accuracy"}}}: the first question of each grounded document,
    every question of the existence and multiple-choice drills (each drill turn after the first carries no scene
    words: the first turn's are used)."""
    tally: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for doc in docs:
        if doc.kind not in ("grounded", "exist", "choice") or len(doc.pieces) < 2:
            continue
        words = user_message(doc.pieces[0]).split("\n")[0]
        turns = range(0, 2 if doc.kind in first_only_kinds else len(doc.pieces) - 1, 2)
        for i in turns:
            message = user_message(doc.pieces[i])
            if i:
                message = words + "\n" + message
            kind = question_type(message)
            cell = tally[doc.kind][kind]
            cell[0] += 1
            cell[1] += answer(message) == _reply(doc.pieces[i + 1])
    return {k: {t: {"questions": n, "accuracy": hits / n} for t, (n, hits) in sorted(v.items())}
            for k, v in tally.items()}


def score_mmbench_words(mm_dir: Path) -> dict:
    """The oracle on the world's MMBench-like set (the prompt the gate gives the LM), per row and circular."""
    scenes = {s["image"]: Scene.from_dict(s) for s in json.loads((mm_dir / "scenes.json").read_text())}
    tsv = next(mm_dir.glob("*.tsv")).read_text().splitlines()
    head = tsv[0].split("\t")
    answers = {int(r[0]): r[head.index("answer")] for r in (line.split("\t") for line in tsv[1:])}
    rows = [json.loads(line) for line in (mm_dir / "llava_mmbench_dev.jsonl").read_text().splitlines()]
    hits, groups = 0, {}
    for r in rows:
        pred = answer(f"{scene_in_words(scenes[r['image']])}\n{r['text']}")
        ok = pred == answers[r["question_id"]]
        hits += ok
        groups[r["question_id"] % 1_000_000] = groups.get(r["question_id"] % 1_000_000, True) and ok
    return {"rows": len(rows), "accuracy": hits / len(rows), "circular": sum(groups.values()) / len(groups)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", help="a synth world (qmamba data synth --out ...)")
    parser.add_argument("--small", type=int, default=0, help="else make a world of the small size's settings "
                                                             "with this many align and finetune images")
    args = parser.parse_args()
    from qmamba.data.synth import synthesize
    from qmamba.data.synth.manifest import SynthManifest
    from qmamba.micro.corpus import build_corpus
    from qmamba.micro.sizes import SMALL

    with tempfile.TemporaryDirectory() as tmp:
        if args.world:
            manifest = SynthManifest.load(args.world)
        else:
            world = {**SMALL.world, "workers": 0}
            manifest = synthesize(tmp, seed=1000, n_align=args.small or 300, n_finetune=args.small or 300,
                                  n_eval=200, progress=False, **world)
        scores = score_documents(build_corpus(manifest))
        mmbench = score_mmbench_words(manifest.path("eval", "mmbench", "dir"))
    print("| documents | question type | questions | oracle accuracy |\n| --- | --- | ---: | ---: |")
    for kind, types in scores.items():
        for name, s in types.items():
            print(f"| {kind} | {name} | {s['questions']} | {100 * s['accuracy']:.1f} |")
        total = sum(s["questions"] for s in types.values())
        right = sum(s["questions"] * s["accuracy"] for s in types.values())
        print(f"| {kind} | all | {total} | {100 * right / total:.1f} |")
    print(f"\nMMBench-like set, scene in words: {100 * mmbench['accuracy']:.1f}% of {mmbench['rows']} rows, "
          f"CircularEval {100 * mmbench['circular']:.1f}%")


if __name__ == "__main__":
    main()
