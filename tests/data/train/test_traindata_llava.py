"""LLaVA conversation files: JSON and JSONL parse alike, every malformed-record kind is reported with
its file and id (never raised), and a file that cannot be read raises one error naming it."""

from __future__ import annotations

import json

import pytest
from traindata_utils import convo, write_json, write_jsonl

from qmamba.data.llava import BadRecord, Record, load_records
from qmamba.errors import InputError

RECORDS = [
    convo("<image>\nwhat is this?", "a red circle.", image="a.png", rid="r0"),
    convo("how many?", "two.", "left or right?", "left.", rid="r1"),  # text-only, two rounds
    {"id": 7, "image": "b.png", "conversations": [{"from": "human", "value": "describe <image>"},
                                                  {"from": "gpt", "value": "a blue square."}]},
]


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_and_jsonl_give_the_same_records(tmp_path, fmt):
    path = (write_json if fmt == "json" else write_jsonl)(tmp_path / f"data.{fmt}", RECORDS)
    good, bad = load_records(path)
    assert bad == []
    assert [r.id for r in good] == ["r0", "r1", "7"]
    assert [r.index for r in good] == [0, 1, 2] and {r.source for r in good} == {str(path)}
    assert good[0] == Record("r0", "a.png", [("user", "<image>\nwhat is this?"), ("assistant", "a red circle.")],
                             str(path), 0)
    assert good[1].image is None
    assert good[1].turns == [("user", "how many?"), ("assistant", "two."), ("user", "left or right?"),
                             ("assistant", "left.")]
    assert good[2].turns[0] == ("user", "<image>\ndescribe")  # placeholder moved to the start


def test_image_placeholder_is_normalised_to_the_start_of_the_first_user_turn(tmp_path):
    path = write_json(tmp_path / "d.json", [
        convo("what is this?", "a circle.", image="a.png", rid="none"),  # no placeholder: prepended
        convo("what is this?", "a circle.", "and <image>\nthis?", "yes.", image="a.png", rid="later"),
        convo("what is this?\n<image>", "a circle.", image="a.png", rid="end"),
    ])
    good, bad = load_records(path)
    assert bad == []
    for r in good:
        assert r.turns[0] == ("user", "<image>\nwhat is this?"), r.id
        assert sum(text.count("<image>") for _, text in r.turns) == 1, r.id
    assert good[1].turns[2] == ("user", "and this?")


def test_leading_assistant_turns_are_dropped_and_roles_mapped(tmp_path):
    rec = {"id": "g", "conversations": [{"from": "gpt", "value": "hello."}, {"from": "user", "value": "hi?"},
                                        {"from": "assistant", "value": "yes."}]}
    good, bad = load_records(write_json(tmp_path / "d.json", [rec]))
    assert bad == [] and good[0].turns == [("user", "hi?"), ("assistant", "yes.")]


BAD_KINDS = [
    ("not-object", ["not a record"], "#0", "not a JSON object"),
    ("no-conversations", {"id": "x1"}, "x1", "no 'conversations'"),
    ("empty-conversations", {"id": "x2", "conversations": []}, "x2", "no 'conversations'"),
    ("bad-role", {"id": "x3", "conversations": [{"from": "system", "value": "hi"}]}, "x3",
     "conversations[0].from is 'system'"),
    ("value-not-string", {"id": "x4", "conversations": [{"from": "human", "value": 3}]}, "x4",
     "conversations[0].value is int"),
    ("turn-not-object", {"id": "x5", "conversations": ["hi"]}, "x5", "conversations[0] is str"),
    ("no-assistant", convo("what is this?", rid="x6"), "x6", "no assistant"),
    ("only-assistant", {"id": "x7", "conversations": [{"from": "gpt", "value": "a."}]}, "x7", "no assistant"),
    ("placeholder-no-image", convo("<image>\nwhat?", "a.", rid="x8"), "x8", "no 'image' field"),
    ("two-placeholders", convo("<image> <image> what?", "a.", image="a.png", rid="x9"), "x9", "2 <image>"),
    ("placeholders-two-turns", convo("<image> what?", "a.", "<image> and?", "b.", image="a.png", rid="x10"),
     "x10", "2 <image>"),
    ("placeholder-in-reply", convo("<image> what?", "a <image>.", image="a.png", rid="x11"), "x11",
     "assistant turn 1"),
    ("image-not-string", convo("what?", "a.", image=5, rid="x12"), "x12", "'image' is 5"),
    ("two-images", convo("what?", "a.", image=["a.png", "b.png"], rid="x13"), "x13", "'image' is"),
]


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
@pytest.mark.parametrize("kind, raw, rid, reason", BAD_KINDS, ids=[k[0] for k in BAD_KINDS])
def test_each_bad_record_kind_is_reported_with_file_and_id(tmp_path, fmt, kind, raw, rid, reason):
    records = [RECORDS[0], raw, RECORDS[1]]
    path = (write_json if fmt == "json" else write_jsonl)(tmp_path / f"d.{fmt}", records)
    good, bad = load_records(path)
    assert [r.id for r in good] == ["r0", "r1"]
    assert len(bad) == 1, bad
    assert bad[0].source == str(path) and bad[0].id == (rid if rid != "#0" else "#1")
    assert reason in bad[0].reason, bad[0].reason
    assert str(path) in str(bad[0]) and bad[0].id in str(bad[0])


def test_record_without_id_is_named_by_its_index(tmp_path):
    raw = convo("<image> what?", "a.")  # no id, no image
    _, bad = load_records(write_json(tmp_path / "d.json", [RECORDS[0], RECORDS[1], raw]))
    assert bad == [BadRecord(str(tmp_path / "d.json"), "#2", bad[0].reason)]


def test_invalid_jsonl_line_is_a_bad_record_naming_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n{broken\n\n" + json.dumps(RECORDS[1]) + "\n")
    good, bad = load_records(path)
    assert [r.id for r in good] == ["r0", "r1"]
    assert bad[0].id == "line 2" and "invalid JSON" in bad[0].reason and bad[0].source == str(path)


def test_unreadable_files_raise_one_error_naming_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(InputError, match=f"{missing}.*does not exist"):
        load_records(missing)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": "a", "conversations": []},\n {"id": ')
    with pytest.raises(InputError, match=f"{broken}: invalid JSON at line 2"):
        load_records(broken)
    one = tmp_path / "one.json"
    one.write_text(json.dumps(RECORDS[0], indent=2))
    with pytest.raises(InputError, match=f"{one}: holds one JSON object"):
        load_records(one)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("hello\nworld\n")
    with pytest.raises(InputError, match=f"{garbage}: no line is valid JSON"):
        load_records(garbage)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match=f"{empty}: empty"):
        load_records(empty)
