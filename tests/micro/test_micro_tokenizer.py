"""The micro BPE tokenizer: special tokens are single ids, text round-trips, files load offline, training
is deterministic."""

from __future__ import annotations

import json

import pytest
from micro_assets_testkit import tiny_corpus, tiny_tokenizer

from qmamba.data.tokenizer import load_tokenizer
from qmamba.errors import ConfigError
from qmamba.micro.tokenizer import SPECIAL_TOKENS, TOKENIZER_FILES, check_tokenizer, train_tokenizer


def test_special_tokens_are_single_ids_even_inside_text(tmp_path_factory):
    tok, _ = tiny_tokenizer(tmp_path_factory)
    for expected, token in enumerate(SPECIAL_TOKENS):
        assert tok.encode(token, add_special_tokens=False) == [expected]
        ids = tok.encode(f"red{token}circle", add_special_tokens=False)
        assert ids.count(expected) == 1, (token, tok.convert_ids_to_tokens(ids))
    assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (0, 0, None)
    assert tok.encode("a circle") == tok.encode("a circle", add_special_tokens=False)  # nothing is added
    check_tokenizer(tok)


def test_round_trip_on_the_corpus_and_on_unseen_text(tmp_path_factory):
    tok, _ = tiny_tokenizer(tmp_path_factory)
    docs = tiny_corpus(tmp_path_factory)
    bad = [d.text for d in docs if tok.decode(tok.encode(d.text)) != d.text]
    assert not bad, f"{len(bad)} of {len(docs)} documents do not round-trip, e.g. {bad[0][:200]!r}"
    for text in ("  two  spaces , before punctuation .", "tabs\tand\nnew\n\nlines", "héllo ✓ 数字 🙂"):
        assert tok.decode(tok.encode(text)) == text


def test_saved_files_load_offline_and_encode_the_same(tmp_path_factory):
    from transformers import AutoTokenizer

    tok, folder = tiny_tokenizer(tmp_path_factory)
    assert all((folder / f).is_file() for f in TOKENIZER_FILES)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"  # transformers 4 cannot load TokenizersBackend
    assert json.loads((folder / "special_tokens_map.json").read_text())["eos_token"] == "<|endoftext|>"
    text = tiny_corpus(tmp_path_factory)[-1].text
    for loaded in (load_tokenizer(folder), AutoTokenizer.from_pretrained(str(folder), local_files_only=True)):
        check_tokenizer(loaded)
        assert len(loaded) == len(tok)
        assert loaded.encode(text) == tok.encode(text)


def test_the_bpe_learns_merges_up_to_the_lexicon(tmp_path_factory):
    tok, _ = tiny_tokenizer(tmp_path_factory)
    assert 300 < len(tok) <= 1024  # bytes + specials + merges; the micro lexicon saturates below 1024
    assert len(tok.encode(" circle")) == 1
    small, _ = tiny_tokenizer(tmp_path_factory, vocab_size=280)
    assert len(small) == 280


def test_training_is_deterministic(tmp_path):
    texts = ["a red circle at the top left<|endoftext|>", "<|user|>\nWhat color?<|endoftext|>\n<|assistant|>\nred"] * 5
    train_tokenizer(texts, 300, tmp_path / "a")
    train_tokenizer(texts, 300, tmp_path / "b")
    for name in TOKENIZER_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_bad_requests_fail_clearly():
    with pytest.raises(ConfigError, match="at least 259"):
        train_tokenizer(["text"], vocab_size=100)
    with pytest.raises(ConfigError, match="no texts"):
        train_tokenizer([], vocab_size=512)
