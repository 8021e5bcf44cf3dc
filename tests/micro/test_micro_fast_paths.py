"""The build's fast data paths give the tokens and labels of the per-document functions, on the tiny world's
corpus and on one of the small size's world settings (4 x 4 grid, varied style, more objects and text); the
question types and the rule-based oracle of ``benchmarks/micro_oracle.py`` read the words of the small world."""

from __future__ import annotations

import numpy as np
import pytest
from micro_assets_testkit import tiny_corpus, tiny_tokenizer
from testing_utils import benchmark_script

from qmamba.data.synth import synthesize
from qmamba.micro.corpus import Document, PieceTokens, build_corpus, encode_batch, encode_document
from qmamba.micro.grounding import question_type, user_message
from qmamba.micro.instruct_lm import labelled, reply_labels, reply_rows
from qmamba.micro.sizes import SMALL
from qmamba.micro.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    world = {**SMALL.world, "workers": 0}
    return synthesize(tmp_path_factory.mktemp("small_world"), seed=1000, n_align=40, n_finetune=40, n_eval=12,
                      progress=False, **world)


@pytest.fixture(scope="module")
def small_corpus(small_world):
    docs = build_corpus(small_world)
    return docs, train_tokenizer([d.text for d in docs], SMALL.vocab_size)


def _check_same_tokens(tok, docs):
    tokens = PieceTokens(tok, docs)
    for doc in docs:
        assert tokens.document(doc).tolist() == encode_document(tok, doc)
        ids, labels = reply_labels(tok, doc, max_len=10_000)
        fast_ids, fast_labels = labelled(tokens.pieces(doc), max_len=10_000)
        assert (fast_ids.tolist(), fast_labels.tolist()) == (ids, labels)
        short = labelled(tokens.pieces(doc), max_len=37)
        assert (short[0].tolist(), short[1].tolist()) == reply_labels(tok, doc, max_len=37)
    rows = reply_rows(tokens, docs, ("grounded", "exist"), 768)
    slow = [reply_labels(tok, d, 768) for d in docs if d.kind in ("grounded", "exist") and len(d.pieces) > 1]
    assert [(a.tolist(), b.tolist()) for a, b in rows] == slow


def test_piece_tokens_and_labels_are_those_of_the_per_document_functions(tmp_path_factory, small_corpus):
    tok, _ = tiny_tokenizer(tmp_path_factory)
    _check_same_tokens(tok, tiny_corpus(tmp_path_factory))
    docs, small_tok = small_corpus
    assert len(small_tok) < 1024  # the small world's lexicon saturates the BPE too
    _check_same_tokens(small_tok, docs)


def test_pieces_with_an_image_placeholder_encode_as_encode_with_image(tmp_path_factory):
    tok, _ = tiny_tokenizer(tmp_path_factory)
    doc = Document("chat", ("<|user|>\n<image>\nWhat color is the circle?<|endoftext|>\n<|assistant|>\n",
                            "red<|endoftext|>", "<image>", ""))
    tokens = PieceTokens(tok, [doc])
    assert tokens.document(doc).tolist() == encode_document(tok, doc)
    assert encode_batch(tok, ["a red circle", "", "CAT"]) == [tok.encode(t, add_special_tokens=False)
                                                              for t in ("a red circle", "", "CAT")]


def test_every_question_of_the_small_world_has_a_type(small_corpus):
    docs, _ = small_corpus
    types = {question_type(user_message(d.pieces[i])) for d in docs if d.kind in ("grounded", "exist", "choice")
             for i in range(0, len(d.pieces) - 1, 2)}
    assert "other" not in types
    assert {"count", "exist", "caption", "choice:OCR", "verify_rel", "query_position"} <= types


def test_the_words_answer_every_question_but_the_caption_requests(small_world, small_corpus):
    """The oracle reads only the LM's words: every reply they determine is right; a caption request's reply is
    brief or detailed at the generator's choice, which no reader of the words can know."""
    oracle = benchmark_script("micro_oracle")
    docs, _ = small_corpus
    scores = oracle.score_documents(docs)
    assert set(scores) == {"grounded", "exist", "choice"}
    for kind, types in scores.items():
        for name, s in types.items():
            if name != "caption":
                assert s["accuracy"] == 1.0, (kind, name, s)
    mmbench = oracle.score_mmbench_words(small_world.path("eval", "mmbench", "dir"))
    assert mmbench["accuracy"] == 1.0 and mmbench["circular"] == 1.0
    scene = oracle.parse_words("Image: There are 2 objects: a small red circle at the row 1 column 2 and the word "
                               "CAT in blue at the row 4 column 4.")
    assert [(o.row, o.col, o.color, o.shape, o.text) for o in scene.objects] == [
        (0, 1, "red", "circle", None), (3, 3, "blue", None, "CAT")]
    assert np.isclose(sum(s["questions"] for s in scores["grounded"].values()), sum(d.kind == "grounded" for d in docs))
