"""The LM corpus: training files only (no evaluation scene reaches it), every kind present, chat documents
tokenized exactly as the finetune stage tokenizes them, deterministic."""

from __future__ import annotations

import json
import shutil

from micro_assets_testkit import tiny_corpus, tiny_tokenizer, tiny_world

from qmamba.data.chat import IMAGE_TOKEN_ID, get_template
from qmamba.data.dataset import encode_finetune
from qmamba.data.llava import load_records
from qmamba.data.synth.language import caption
from qmamba.data.synth.scene import Scene
from qmamba.micro.corpus import KINDS, build_corpus, corpus_stats, encode_document


def test_every_kind_is_there_in_the_expected_numbers(tmp_path_factory):
    world = tiny_world(tmp_path_factory)
    stats = corpus_stats(tiny_corpus(tmp_path_factory))
    n_align, n_finetune = world.counts["align"], world.counts["finetune"]
    scenes = [Scene.from_dict(s) for split in ("align", "finetune") for s in json.loads(world.path("scenes", split).read_text())]
    with_shapes = sum(bool(s.categories()) for s in scenes)
    assert 0 < with_shapes <= n_align + n_finetune
    assert stats == {"caption": n_align, "caption_chat": n_align, "chat": n_finetune, "grounded": n_finetune,
                     "description": n_align, "exist": with_shapes,
                     "choice": n_align + n_finetune}
    assert set(stats) == set(KINDS)


def test_no_evaluation_scene_reaches_the_corpus(tmp_path_factory):
    world = tiny_world(tmp_path_factory)
    text = "\n".join(d.text for d in tiny_corpus(tmp_path_factory))
    train_captions = [caption(Scene.from_dict(s), detailed=True)
                      for split in ("align", "finetune") for s in json.loads(world.path("scenes", split).read_text())]
    assert sum(c in text for c in train_captions) == len(train_captions)  # the probe finds what is there
    for task in world.eval_tasks:
        for row in json.loads(world.path("eval", task, "scenes").read_text()):
            described = caption(Scene.from_dict(row), detailed=True)
            assert described not in text, f"{task} scene {row['image']} is in the LM corpus"


def test_the_corpus_never_reads_the_evaluation_files(tmp_path_factory, tmp_path):
    world = tiny_world(tmp_path_factory)
    copy = tmp_path / "world"
    shutil.copytree(world.root, copy, ignore=shutil.ignore_patterns("eval"))
    assert not (copy / "eval").exists()
    assert build_corpus(copy) == tiny_corpus(tmp_path_factory)


def test_chat_documents_tokenize_as_the_finetune_stage(tmp_path_factory):
    world = tiny_world(tmp_path_factory)
    tok, _ = tiny_tokenizer(tmp_path_factory)
    records, _ = load_records(world.path("finetune"))
    chats = [d for d in tiny_corpus(tmp_path_factory) if d.kind == "chat"]
    assert len(chats) == len(records)
    for record, doc in zip(records, chats):
        ids, _, _ = encode_finetune(tok, get_template("zephyr"), record, image_first=False)
        assert encode_document(tok, doc) == [t for t in ids if t != IMAGE_TOKEN_ID]
        assert doc.text.startswith("<|user|>\n") and doc.text.endswith("<|endoftext|>")


def test_grounded_documents_describe_the_image_in_words(tmp_path_factory):
    docs = tiny_corpus(tmp_path_factory)
    grounded = [d for d in docs if d.kind == "grounded"]
    chats = [d for d in docs if d.kind == "chat"]
    for g, c in zip(grounded, chats):
        assert g.pieces[0].startswith("<|user|>\nImage: There ")
        assert "<image>" not in "".join(g.pieces) and "<image>" in c.pieces[0]
        assert g.pieces[1:] == c.pieces[1:]


def test_the_corpus_is_deterministic(tmp_path_factory):
    world = tiny_world(tmp_path_factory)
    assert build_corpus(world) == build_corpus(world.root)


def test_drill_rounds_add_other_questions_about_the_same_scenes(tmp_path_factory):
    world = tiny_world(tmp_path_factory)
    one, two = build_corpus(world), build_corpus(world, drill_rounds=2)
    for kind in ("exist", "choice"):
        first, both = [d for d in one if d.kind == kind], [d for d in two if d.kind == kind]
        assert both[:len(first)] == first and len(both) == 2 * len(first)  # round 0 as with one round
        second = both[len(first):]
        # the same scene in words opens a round's document, with other questions after it
        assert [d.pieces[0].split("\n")[1] for d in second] == [d.pieces[0].split("\n")[1] for d in first]
        assert sum(a != b for a, b in zip(first, second, strict=True)) > 0.9 * len(first)
    assert [d for d in two if d.kind not in ("exist", "choice")] == [d for d in one if d.kind not in ("exist", "choice")]
