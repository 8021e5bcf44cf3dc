"""Training conversations in LLaVA format: align-stage captions and finetune-stage instructions.

Align: one turn per image, ``"<image>\\n" + caption request`` -> caption. The request is drawn
from ``CAPTION_REQUESTS``; the caption lists every object in reading order, with positions
(75%) or without them (25%).

Finetune: 3-6 turns per image (``<image>`` only in the first human turn), each in one of the
prompt styles the evaluation sets use, so that a model trained here answers them in format:

* ``short`` (45%): a question of any answerable family + "Answer the question using a single
  word or phrase." (the VQAv2 / GQA / POPE / TextVQA suffix) -> a word or phrase;
* ``exist`` (10%): a POPE-style "Is there a <colour> <shape> in the image?" with the same suffix,
  yes and no in turn, absent categories drawn like POPE's splits (``existence``) -> yes / no;
* ``vizwiz`` (12%): the VizWiz suffix; half of these ask about absent objects -> "unanswerable";
* ``ocr`` (8%, images with text): a reading question with "Reference OCR token: ..." (TextVQA);
* ``choice`` (18%): an MMBench-style question with lettered options -> the letter;
* ``caption`` (7%): a caption request -> the caption.
"""

from __future__ import annotations

import numpy as np

from qmamba.data.synth import vocab
from qmamba.data.synth.choice import make_choice
from qmamba.data.synth.existence import existence_turn
from qmamba.data.synth.families import Alternator, sample_questions
from qmamba.data.synth.language import caption
from qmamba.data.synth.questions import pick, read_text
from qmamba.data.synth.scene import Scene

CAPTION_REQUESTS = (
    "Describe the image briefly.",
    "Give a short description of this picture.",
    "What is shown in this image?",
    "Write a caption for the image.",
    "Summarize the contents of the picture.",
    "Describe what you see.",
    "List the objects in the image.",
    "Provide a brief caption for this image.",
    "What does this picture contain?",
    "Tell me what is in the image.",
)

SHORT_MIX = {
    "exist": 3.0, "count": 2.0, "query_color": 2.0, "query_shape": 1.5, "query_size": 1.0,
    "query_position": 1.5, "read_text": 1.0, "choose_color": 0.5, "choose_shape": 0.5, "choose_size": 0.5,
    "verify_color": 1.0, "verify_rel": 1.5, "choose_rel": 1.0, "same_attr": 1.0, "logic_or": 0.7, "logic_and": 0.7,
}
VIZWIZ_MIX = {"query_color": 2.0, "query_shape": 1.5, "query_size": 0.5, "query_position": 1.0, "read_text": 1.0,
              "count": 1.0, "exist": 1.0}
STYLES = ("short", "exist", "vizwiz", "ocr", "choice", "caption")
STYLE_WEIGHTS = (0.45, 0.10, 0.12, 0.08, 0.18, 0.07)


def message(role: str, value: str) -> dict:
    return {"from": role, "value": value}


def align_record(scene: Scene, rng: np.random.Generator, rid: str) -> dict:
    """One align-stage sample: a caption request and the caption."""
    request = pick(rng, CAPTION_REQUESTS)
    text = caption(scene, detailed=rng.random() < 0.75)
    return {"id": rid, "image": scene.image,
            "conversations": [message("human", "<image>\n" + request), message("gpt", text)]}


def ocr_tokens(scene: Scene) -> str:
    """The OCR line's tokens: every rendered text in reading order, comma-separated."""
    return ", ".join(o.text for o in scene.objects if o.text is not None)


def _turn(scene: Scene, rng: np.random.Generator, style: str, wants: Alternator, taken: set[str]):
    """(prompt, answer) for one turn of ``style``, or None."""
    if style == "choice":
        choice = make_choice(scene, rng)
        if choice is None or choice.prompt() in taken:
            return None
        taken.add(choice.prompt())
        return choice.prompt(), choice.answer_letter
    if style == "caption":
        request = pick(rng, CAPTION_REQUESTS)
        return request, caption(scene, detailed=rng.random() < 0.75)
    if style == "ocr":
        q = read_text(scene, rng)
        if q is None or q.text in taken:
            return None
        taken.add(q.text)
        return f"{q.text}{vocab.OCR_PREFIX}{ocr_tokens(scene)}{vocab.SHORT_ANSWER}", q.answer
    if style == "exist":
        turn = existence_turn(scene, rng, wants.value)
        if turn is None or turn[0] in taken:
            return None
        taken.add(turn[0])
        wants.advance()
        return turn[0] + vocab.SHORT_ANSWER, turn[1]
    if style == "vizwiz":
        mix = {"unanswerable": 1.0} if rng.random() < 0.5 else VIZWIZ_MIX
        found = sample_questions(scene, rng, mix, 1, wants, taken)
        return (found[0].text + vocab.VIZWIZ_SUFFIX, found[0].answer) if found else None
    found = sample_questions(scene, rng, SHORT_MIX, 1, wants, taken)
    return (found[0].text + vocab.SHORT_ANSWER, found[0].answer) if found else None


def finetune_record(scene: Scene, rng: np.random.Generator, rid: str, wants: Alternator,
                    turns: tuple[int, int] = (3, 6)) -> dict:
    """One multi-turn instruction conversation about ``scene``."""
    n_turns = int(rng.integers(turns[0], turns[1] + 1))
    p = np.asarray(STYLE_WEIGHTS) / sum(STYLE_WEIGHTS)
    taken: set[str] = set()
    conversation: list[dict] = []
    captioned = False
    for _ in range(8 * n_turns):
        if len(conversation) == 2 * n_turns:
            break
        style = STYLES[int(rng.choice(len(STYLES), p=p))]
        if style == "caption" and captioned:
            continue
        turn = _turn(scene, rng, style, wants, taken)
        if turn is None:
            continue
        captioned |= style == "caption"
        prompt = ("<image>\n" if not conversation else "") + turn[0]
        conversation += [message("human", prompt), message("gpt", turn[1])]
    return {"id": rid, "image": scene.image, "conversations": conversation}
