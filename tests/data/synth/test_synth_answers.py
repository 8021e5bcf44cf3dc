"""Every generated answer follows from its scene graph, recomputed by an independent parser."""

from __future__ import annotations

import collections
import csv
import re

import pytest
from synth_oracle import POS3, TEMPLATES, answer, read_json, read_jsonl, rel_holds, the_one

SHORT = "\nAnswer the question using a single word or phrase."
VIZWIZ = "\nWhen the provided information is insufficient, respond with 'Unanswerable'." + SHORT
MC = "\nAnswer with the option's letter from the given choices directly."
OCR = re.compile(r"(?P<q>[^\n]+)\nReference OCR token: (?P<tokens>[^\n]*)" + re.escape(SHORT))


def _texts(scene: dict) -> str:
    return ", ".join(o["text"] for o in scene["objects"] if o["text"] is not None)


def check_turn(scene: dict, prompt: str, reply: str, hits: collections.Counter) -> None:
    """Assert that ``reply`` is the right answer to ``prompt`` about ``scene``."""
    if prompt.endswith(MC):
        hits["choice"] += 1
        return check_choice(scene, prompt, reply)
    if m := OCR.fullmatch(prompt):
        assert m["tokens"] == _texts(scene), prompt
        prompt = m["q"]
        allowed_unanswerable = False
    elif prompt.endswith(VIZWIZ):
        prompt, allowed_unanswerable = prompt[: -len(VIZWIZ)], True
    elif prompt.endswith(SHORT):
        prompt, allowed_unanswerable = prompt[: -len(SHORT)], False
    else:
        hits["caption"] += 1
        return check_caption(scene, reply)
    name, expected = answer(scene, prompt)
    hits[name] += 1
    hits["unanswerable"] += expected == "unanswerable"
    assert reply == expected, f"{scene['image']}: {prompt!r} answered {reply!r}, the graph says {expected!r}"
    assert allowed_unanswerable or expected != "unanswerable", f"'unanswerable' without the VizWiz prompt: {prompt!r}"


_ITEM = re.compile(r"(?:an? (?P<size>small|large) (?P<color>\w+) (?P<shape>\w+)|the (?:number|word) (?P<text>\w+) "
                   r"in (?P<tcolor>\w+))(?: at the (?P<pos>[a-z ]+))?")


def check_caption(scene: dict, caption: str) -> None:
    body = re.sub(r"^There (?:is 1 object|are \d+ objects): ", "", caption)
    if body != caption:
        assert caption.startswith("There is 1 object" if len(scene["objects"]) == 1
                                  else f"There are {len(scene['objects'])} objects"), caption
    items = re.split(r", | and ", body[0].lower() + body[1:].rstrip("."))
    assert len(items) == len(scene["objects"]), caption
    for item, obj in zip(items, scene["objects"]):
        m = _ITEM.fullmatch(item)
        assert m, f"caption item {item!r}"
        got = (m["size"], m["color"] or m["tcolor"], m["shape"], m["text"])
        assert got == (obj["size"], obj["color"], obj["shape"], obj["text"]), (item, obj)
        assert m["pos"] is None or POS3[m["pos"]] == tuple(obj["cell"]), (item, obj)


def check_choice(scene: dict, prompt: str, letter: str) -> None:
    lines = prompt[: -len(MC)].split("\n")
    options = [re.fullmatch(r"([A-D])\. (.+)", line) for line in lines]
    first = next(i for i, m in enumerate(options) if m)
    letters = [m[1] for m in options[first:]]
    assert letters == list("ABCD")[: len(letters)] and 2 <= len(letters) <= 4, prompt
    texts = [m[2] for m in options[first:]]
    question = lines[first - 1]
    correct = [is_correct(scene, question, t) for t in texts]
    assert sum(correct) == 1, f"{prompt!r}: {sum(correct)} correct options"
    assert texts[correct.index(True)] == texts["ABCD".index(letter)], f"{prompt!r}: answered {letter}"


def is_correct(scene: dict, question: str, option: str) -> bool:
    if m := re.fullmatch(r"Where is (the .+) relative to (the .+)\?", question):
        return rel_holds(the_one(scene, m[1]), the_one(scene, m[2]), option)
    if m := re.fullmatch(r"Which object has the same color as (the .+)\?", question):
        a, b = the_one(scene, m[1]), the_one(scene, option)
        return a["id"] != b["id"] and a["color"] == b["color"]
    return answer(scene, question)[1] == option.lower()


def _conversation_turns(record: dict):
    conv = record["conversations"]
    for i in range(0, len(conv), 2):
        yield conv[i]["value"].removeprefix("<image>\n"), conv[i + 1]["value"]


def test_finetune_answers_follow_from_graphs(world, scenes_by_image):
    hits = collections.Counter()
    for record in read_json(world.path("finetune")):
        scene = scenes_by_image["finetune"][record["image"]]
        for prompt, reply in _conversation_turns(record):
            check_turn(scene, prompt, reply, hits)
    families = {name for name, *_ in TEMPLATES}
    assert families | {"choice", "caption", "unanswerable"} <= set(hits), f"never generated: {families - set(hits)}"


def test_align_captions_follow_from_graphs(world, scenes_by_image):
    for record in read_json(world.path("align")):
        (prompt, reply), = _conversation_turns(record)
        check_caption(scenes_by_image["align"][record["image"]], reply)


def test_conversation_format(world):
    for name in ("align", "finetune"):
        for record in read_json(world.path(name)):
            assert set(record) == {"id", "image", "conversations"}
            conv = record["conversations"]
            assert [m["from"] for m in conv] == ["human", "gpt"] * (len(conv) // 2) and conv
            assert conv[0]["value"].startswith("<image>\n")
            assert sum(m["value"].count("<image>") for m in conv) == 1, record["id"]
            assert (world.path("images") / record["image"]).is_file()


def _eval_questions(world):
    """(task, image, prompt without suffix, canonical answer) for the open-answer evaluation sets."""
    anns = {a["question_id"]: a for a in read_json(world.path("eval", "vqav2", "annotations"))["annotations"]}
    for row in read_jsonl(world.path("eval", "vqav2", "llava_questions")):
        yield "vqav2", row["image"], row["text"], anns[row["question_id"]]["multiple_choice_answer"]
    gqa = read_json(world.path("eval", "gqa", "questions"))
    for row in read_jsonl(world.path("eval", "gqa", "llava_questions")):
        yield "gqa", row["image"], row["text"], gqa[row["question_id"]]["answer"]
    for rec, row in zip(read_json(world.path("eval", "vizwiz", "annotations")),
                        read_jsonl(world.path("eval", "vizwiz", "llava_questions"))):
        majority = collections.Counter(a["answer"] for a in rec["answers"]).most_common(1)[0][0]
        yield "vizwiz", rec["image"], row["text"], majority
    data = read_json(world.path("eval", "textvqa", "annotations"))["data"]
    for rec, row in zip(data, read_jsonl(world.path("eval", "textvqa", "llava_questions"))):
        yield "textvqa", row["image"], row["text"], collections.Counter(rec["answers"]).most_common(1)[0][0]
    for split in ("random", "popular", "adversarial"):
        for row in read_jsonl(world.path("eval", "pope", f"labels_{split}")):
            yield "pope", row["image"], row["text"] + SHORT, row["label"]


def test_eval_answers_follow_from_graphs(world, scenes_by_image):
    hits = collections.Counter()
    for task, image, prompt, expected in _eval_questions(world):
        check_turn(scenes_by_image[task][image], prompt, expected, hits)
    assert hits["exist"] > 100 and hits["read_pos"] + hits["read_kind"] + hits["read_color"] > 40, hits


def test_mmbench_answers_follow_from_graphs(world, scenes_by_image):
    with open(world.path("eval", "mmbench", "tsv"), newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    images = {r["question_id"]: r["image"] for r in read_jsonl(world.path("eval", "mmbench", "llava_questions"))}
    for row in rows:
        options = [row[k] for k in "ABCD" if row[k]]
        prompt = (row["hint"] + "\n" if row["hint"] else "") + row["question"]
        prompt += "".join(f"\n{k}. {o}" for k, o in zip("ABCD", options)) + MC
        check_choice(scenes_by_image["mmbench"][images[int(row["index"])]], prompt, row["answer"])


@pytest.mark.parametrize("bad", ["What color is the circle?", "Is there a red circle in the image?"])
def test_checker_catches_wrong_answers(bad):
    scene = {"image": "x", "objects": [{"id": 0, "cell": [0, 0], "color": "blue", "shape": "circle", "size": "small",
                                        "text": None}]}
    with pytest.raises(AssertionError):
        check_turn(scene, bad + SHORT, "red" if "color" in bad else "yes", collections.Counter())
