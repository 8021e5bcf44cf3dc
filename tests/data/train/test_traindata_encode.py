"""Align and finetune samples token by token against hand-built ids and label masks; truncation;
Cobra's prefix layout."""

from __future__ import annotations

import pytest
import torch
from testing_utils import tiny_tokenizer
from traindata_utils import IGN, IMG, convo, ids_of, transform, write_image, write_json

from qmamba.data.dataset import ConversationDataset

U, A, E = "<|user|>", "<|assistant|>", "<|endoftext|>"
TWO_ROUNDS = convo("<image>\nwhat is this?", "a red circle.", "how many?", "one.", image="a.png", rid="c0")


def _dataset(tmp_path, records, **kw) -> ConversationDataset:
    write_image(tmp_path / "a.png")
    return ConversationDataset([write_json(tmp_path / "d.json", records)], tiny_tokenizer(), transform(), **kw)


def _sample(tmp_path, record, **kw) -> dict:
    sample = _dataset(tmp_path, [record], **kw)[0]
    assert "bad" not in sample, sample
    return sample


def _expected_finetune(tok, image_first: bool):
    prompt1 = ids_of(tok, U, IMG, "what", "is", "this", "?", E, A)
    if image_first:
        prompt1 = ids_of(tok, IMG, U, "what", "is", "this", "?", E, A)
    reply1 = ids_of(tok, "a", "red", "circle", ".", E)
    prompt2 = ids_of(tok, U, "how", "many", "?", E, A)  # "\n<|user|>\n...": the newline is no token here
    reply2 = ids_of(tok, "one", ".", E)
    ids = prompt1 + reply1 + prompt2 + reply2
    labels = [IGN] * len(prompt1) + reply1 + [IGN] * len(prompt2) + reply2
    return ids, labels


@pytest.mark.parametrize("position", ["placeholder", "prefix"])
def test_finetune_labels_only_assistant_turns(tmp_path, position):
    tok = tiny_tokenizer()
    s = _sample(tmp_path, TWO_ROUNDS, stage="finetune", image_position=position)
    ids, labels = _expected_finetune(tok, image_first=position == "prefix")
    assert s["input_ids"] == ids
    assert s["labels"] == labels
    assert s["id"] == "c0" and s["source"] == str(tmp_path / "d.json")
    assert s["pixel_values"].shape == (3, 8, 8) and s["pixel_values"].dtype == torch.float32


def test_align_is_image_caption_eos_with_labels_on_caption(tmp_path):
    tok = tiny_tokenizer()
    s = _sample(tmp_path, TWO_ROUNDS, stage="align")
    caption = ids_of(tok, "a", "red", "circle", ".", E)  # first reply; the human prompt is dropped
    assert s["input_ids"] == [IMG] + caption
    assert s["labels"] == [IGN] + caption
    same = _sample(tmp_path, TWO_ROUNDS, stage="align", image_position="prefix")
    assert same["input_ids"] == s["input_ids"]


def test_text_only_records_have_no_image(tmp_path):
    tok = tiny_tokenizer()
    s = _sample(tmp_path, convo("how many?", "two."), stage="finetune")
    assert s["pixel_values"] is None and IMG not in s["input_ids"]
    assert s["input_ids"] == ids_of(tok, U, "how", "many", "?", E, A, "two", ".", E)
    a = _sample(tmp_path, convo("how many?", "two."), stage="align")
    assert a["input_ids"] == a["labels"] == ids_of(tok, "two", ".", E)


def test_two_tower_transform_concatenates_channels(tmp_path):
    write_image(tmp_path / "a.png")
    ds = ConversationDataset([write_json(tmp_path / "d.json", [TWO_ROUNDS])], tiny_tokenizer(), transform(towers=2))
    assert ds[0]["pixel_values"].shape == (6, 8, 8)


@pytest.mark.parametrize("position", ["placeholder", "prefix"])
def test_truncation_cuts_the_tail_and_never_the_prompt(tmp_path, position):
    ids, labels = _expected_finetune(tiny_tokenizer(), image_first=position == "prefix")
    prompt_len = 8  # the first user turn, the image counted as one token
    for max_length in (9, 10, 14, len(ids) - 1, len(ids), len(ids) + 5):
        s = _sample(tmp_path, TWO_ROUNDS, stage="finetune", image_position=position, max_length=max_length)
        assert s["input_ids"] == ids[:max_length], max_length
        assert s["labels"] == labels[:max_length], max_length
        assert s["input_ids"].count(IMG) == 1
    for max_length in (2, 5, prompt_len):
        s = _dataset(tmp_path, [TWO_ROUNDS], image_position=position, max_length=max_length)[0]
        assert "bad" in s and f"the prompt has {prompt_len} tokens" in s["bad"], s
        assert s["id"] == "c0" and s["source"] == str(tmp_path / "d.json")


def test_the_prompt_runs_to_the_first_reply(tmp_path):
    record = convo("<image> what?", "", image="a.png")
    record["conversations"] = [record["conversations"][0], {"from": "human", "value": "how many how many?"},
                               {"from": "gpt", "value": "two."}]
    # U IMG what ? E A | U how many how many ? E A: two user turns before the first reply
    s = _dataset(tmp_path, [record], max_length=14)[0]
    assert "bad" in s and "the prompt has 14 tokens" in s["bad"]
    s = _dataset(tmp_path, [record], max_length=15)[0]
    assert s["labels"] == [IGN] * 14 + ids_of(tiny_tokenizer(), "two")


def test_a_sample_with_no_target_after_the_shift_is_bad(tmp_path):
    s = _dataset(tmp_path, [convo("how many?", "")], stage="align")[0]  # text-only, empty caption: [eos]
    assert "bad" in s and "no target token" in s["bad"]


def test_align_truncation_keeps_the_image(tmp_path):
    tok = tiny_tokenizer()
    s = _sample(tmp_path, TWO_ROUNDS, stage="align", max_length=3)
    assert s["input_ids"] == [IMG] + ids_of(tok, "a", "red")
    assert s["labels"] == [IGN] + ids_of(tok, "a", "red")


def test_lengths_and_has_image_follow_the_items(tmp_path):
    records = [TWO_ROUNDS, convo("how many?", "two."), convo("<image> what?", "a b c d e f.", image="a.png")]
    ds = _dataset(tmp_path, records, stage="align")
    assert ds.has_image == [True, False, True]
    assert ds.lengths[2] > ds.lengths[0] > ds.lengths[1]
    ft = _dataset(tmp_path, records, stage="finetune")
    assert ft.lengths[0] > ft.lengths[1]  # two rounds outweigh one
