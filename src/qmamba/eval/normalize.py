"""VQA answer normalisation, rule for rule as the official scripts apply it.

Sources (the rules are written out in docs/scoring.md, section "Answer normalisation"):

* ``process_punctuation`` / ``process_digit_article``: GT-Vision-Lab/VQA@a013f0043c1e
  ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (processPunctuation, processDigitArticle).
* ``EvalAIAnswerProcessor``: haotian-liu/LLaVA@c121f0432da2 ``llava/eval/m4c_evaluator.py``
  (copied there from MMF); LLaVA applies it before VQAv2/VizWiz submission and inside TextVQA scoring.
* ``VIZWIZ_CONTRACTIONS``: the VizWiz VQAEval (values spelled with U+2019, a few ASCII).
"""

from __future__ import annotations

import re

# The 21 punctuation marks, in the order the official code walks them.
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")

# vqaEval.py commaStrip: a digit, one comma, a digit, anywhere in the text.
COMMA_STRIP_OFFICIAL = re.compile(r"(\d)(,)(\d)")
# m4c_evaluator.py COMMA_STRIP: a digit, one or more commas, a digit.
COMMA_STRIP_EVALAI = re.compile(r"(?<=\d)(,)+(?=\d)")

# The official periodStrip means "a period not after a digit and not before one", but its look-behind is
# mistyped as a look-ahead for the text "<=<digit>", which can never start at a ".". In effect: every "."
# not followed by a digit. Both scripts pass re.UNICODE (== 32) as the third positional argument of
# ``sub``, which is ``count``: at most 32 periods are deleted.
PERIOD_STRIP = re.compile(r"\.(?!\d)")
MAX_PERIODS_DELETED = 32

NUMBER_MAP = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = ("a", "an", "the")

# 120 entries, identical in vqaEval.py and m4c_evaluator.py (docs/scoring.md, section "Answer normalisation").
# Oddities kept: "somebody'd" maps to "somebodyd", "let's"/"she's" map to themselves, capitalised keys never match.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't",
    "couldve": "could've", "couldnt": "couldn't", "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've",
    "Im": "I'm", "Ive": "I've", "isnt": "isn't",
    "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've",
    "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's",
    "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've",
    "wouldnt": "wouldn't", "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}

# VizWiz's evaluator spells the values with U+2019 (’) except for these keys, whose values stay ASCII.
_VIZWIZ_ASCII_KEYS = frozenset({"arent", "cant", "couldve", "couldnt", "aint", "weve", "wheres", "whove"})
VIZWIZ_CONTRACTIONS = {
    k: (v if k in _VIZWIZ_ASCII_KEYS else v.replace("'", "\u2019")) for k, v in CONTRACTIONS.items()
}


def clean_whitespace(text: str) -> str:
    """``\\n`` and ``\\t`` to spaces, then ``strip()`` (vqaEval.py, first step for answers and predictions)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str, comma_strip: re.Pattern = COMMA_STRIP_OFFICIAL) -> str:
    """vqaEval.py processPunctuation: the conditions look at the ORIGINAL text, edits go to a running copy.

    A mark followed or preceded by a space in the original, or any digit-comma-digit in the original, deletes
    the mark; otherwise each occurrence becomes a space. Then up to 32 periods not followed by a digit go.
    """
    digit_comma = comma_strip.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or digit_comma:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return PERIOD_STRIP.sub("", out, count=MAX_PERIODS_DELETED)


def process_digit_article(text: str, contractions: dict[str, str] = CONTRACTIONS) -> str:
    """vqaEval.py processDigitArticle: lower, split, number words to digits, drop articles, contractions."""
    words = [NUMBER_MAP.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(contractions.get(w, w) for w in words)


def normalize_answer(text: str, contractions: dict[str, str] = CONTRACTIONS) -> str:
    """processPunctuation then processDigitArticle, as vqaEval.py chains them."""
    return process_digit_article(process_punctuation(text), contractions)


class EvalAIAnswerProcessor:
    """LLaVA m4c_evaluator.py EvalAIAnswerProcessor: word_tokenize, whitespace, punctuation, digits/articles.

    Differs from the official scorer's normalisation: it lower-cases first, deletes every ``,`` and ``?``,
    splits ``'s`` off (``man's`` -> ``man 's``) and uses the one-or-more-commas digit rule.
    """

    @staticmethod
    def word_tokenize(text: str) -> str:
        """lower(), delete ``,`` and ``?``, ``'s`` -> `` 's``, strip()."""
        text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
        return text.strip()

    def __call__(self, text: str) -> str:
        text = clean_whitespace(self.word_tokenize(text))
        text = process_punctuation(text, COMMA_STRIP_EVALAI)
        return process_digit_article(text)


evalai_process = EvalAIAnswerProcessor()
