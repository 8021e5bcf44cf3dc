"""Normalisation rules of vqaEval.py and LLaVA's EvalAIAnswerProcessor (docs/scoring.md, Answer normalisation)."""

from __future__ import annotations

import pytest

from qmamba.eval.normalize import (
    COMMA_STRIP_EVALAI,
    CONTRACTIONS,
    VIZWIZ_CONTRACTIONS,
    clean_whitespace,
    evalai_process,
    normalize_answer,
    process_digit_article,
    process_punctuation,
)


@pytest.mark.parametrize("text, expected", [
    ("yes.", "yes"),                      # a period not before a digit goes
    ("3.5", "3.5"),                       # a period before a digit stays
    ("5.", "5"),                          # the mistyped look-behind: a period AFTER a digit still goes
    ("red-white", "red white"),           # no space next to the mark: replaced by a space
    ("red - white", "red  white"),        # " -" in the original: the mark is deleted
    ("hi, there", "hi there"),            # ", " in the original: deleted
    ("red,white", "red white"),
    ("a-b c -d", "ab c d"),               # condition on the original text applies to every occurrence
    ("(a) b", " a b"),
    ("a/-b", "a  b"),                     # "/" became a space first, but "-" is judged on the original text                    # "(" replaced (no "( "/" (" in original), ")" deleted (") " is)
    ("2,3", "23"),                        # digit-comma-digit
    ("1,000 dogs-cats", "1000 dogscats"),  # ... makes every mark vanish, not only the comma
    ("it's 5:00 $5 & 50% #1 *", "it's 5:00 $5 & 50% #1 *"),  # ' : $ & % # * are not punctuation here
    ('say "hi"!', "say hi "),             # ' "' in the original deletes both quotes; "!" becomes a space
])
def test_process_punctuation(text, expected):
    assert process_punctuation(text) == expected


def test_period_count_quirk_deletes_at_most_32():
    assert process_punctuation("." * 40) == "." * 8
    assert process_punctuation("a." * 33) == "a" * 32 + "a."


def test_comma_rule_differs_between_official_and_evalai():
    # official (\d)(,)(\d) needs exactly one comma; EvalAI (?<=\d)(,)+(?=\d) takes several
    assert process_punctuation("2,,3-x") == "2  3 x"
    assert process_punctuation("2,,3-x", COMMA_STRIP_EVALAI) == "23x"


@pytest.mark.parametrize("text, expected", [
    ("The Two dogs", "2 dogs"),
    ("none", "0"), ("zero", "0"), ("ten", "10"), ("eleven", "eleven"),
    ("a an the", ""),
    ("dont", "don't"), ("Dont", "don't"), ("whats up", "what's up"), ("oclock", "o'clock"), ("yall", "y'all"),
    ("Im", "im"), ("Ive", "ive"),          # capitalised keys are unreachable after lower()
    ("somebody'd", "somebodyd"), ("let's", "let's"),  # oddities kept verbatim
    ("red   white ", "red white"),
])
def test_process_digit_article(text, expected):
    assert process_digit_article(text) == expected


def test_contractions_map_is_the_120_entry_appendix():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["couldn'tve"] == "couldn't've" and CONTRACTIONS["'ows'at"] == "'ow's'at"
    assert CONTRACTIONS["Id've"] == "I'd've" and CONTRACTIONS["twas"] == "'twas"


def test_vizwiz_contractions_use_u2019_except_the_ascii_keys():
    assert set(VIZWIZ_CONTRACTIONS) == set(CONTRACTIONS)
    assert VIZWIZ_CONTRACTIONS["dont"] == "don\u2019t"
    assert VIZWIZ_CONTRACTIONS["couldn'tve"] == "couldn\u2019t\u2019ve"
    for key in ("arent", "cant", "couldve", "couldnt", "aint", "weve", "wheres", "whove"):
        assert VIZWIZ_CONTRACTIONS[key] == CONTRACTIONS[key]
    changed = [k for k in CONTRACTIONS if VIZWIZ_CONTRACTIONS[k] != CONTRACTIONS[k]]
    assert len(changed) == 120 - 8 - 1  # "somebody'd" -> "somebodyd" has no apostrophe to change


def test_normalize_answer_chains_punctuation_then_digits():
    assert normalize_answer("Two dogs.") == "2 dogs"
    assert normalize_answer("red - white") == "red white"
    assert clean_whitespace("\tyes\n") == "yes"


@pytest.mark.parametrize("text, expected", [
    ("Man's hat?", "man 's hat"),   # 's split off
    ("red,white", "redwhite"),      # commas deleted before punctuation handling
    ("Yes.", "yes"),
    ("Two, three?", "2 3"),
    ("The  Dog\n", "dog"),
    ("Dont", "don't"),
])
def test_evalai_answer_processor(text, expected):
    assert evalai_process(text) == expected
