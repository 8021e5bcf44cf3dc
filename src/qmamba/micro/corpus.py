"""The micro LM's pretraining text, made from a synth world's TRAINING files only.

    docs = build_corpus("micro")                      # a synth world directory (or its SynthManifest)
    ids = encode_document(tokenizer, docs[0])          # the token ids the LM trains on
    tokens = PieceTokens(tokenizer, docs)              # every distinct piece encoded once, in a batch
    tokens.document(docs[0]) == ids

Read: align.json, finetune.json, scenes/align.json, scenes/finetune.json. Never read: eval/ (the six
evaluation sets and their scenes), so no held-out scene reaches the LM. Document kinds, one list each,
in file order (deterministic; the trainer shuffles):

    caption       an align caption + <|endoftext|>: what the align stage trains on after the image
    caption_chat  an align record in the zephyr template (caption request -> caption)
    chat          a finetune conversation in the zephyr template, exactly as the finetune stage renders it
    grounded      the same conversation with the image replaced by its detailed caption in words
                  ("Image: There are 2 objects: ..."), so the LM learns to answer from its context
    description   an align scene graph in prose: caption, every cell, every pairwise relation (``describe``)
    exist         POPE-style existence drills about every align and finetune scene given in words
                  (``qmamba.data.synth.existence``), seeded by the world's seed
    choice        MMBench-style multiple-choice drills (lettered options, circular rotations) about every
                  align and finetune scene given in words (``qmamba.data.synth.choice``)

A document is a tuple of *pieces* tokenized one at a time (the chat template's turns), the way
``qmamba.data.dataset.encode_finetune`` tokenizes them; the ``<image>`` placeholder becomes no token
(a text-only LM has no image to put there). ``PieceTokens`` encodes a whole corpus at once: each distinct
piece one time (the answers, questions and scene words repeat across documents), with the fast tokenizer's
batch API, which runs in Rust threads; its ids are those of ``encode_document``, piece by piece.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from qmamba.data.chat import IMAGE_PLACEHOLDER, IMAGE_TOKEN_ID, encode_with_image, get_template, render_turns
from qmamba.data.llava import Record, load_records
from qmamba.data.synth.choice import choice_conversation
from qmamba.data.synth.existence import existence_conversation
from qmamba.data.synth.language import caption
from qmamba.data.synth.manifest import SynthManifest
from qmamba.data.synth.scene import Scene
from qmamba.errors import InputError
from qmamba.micro.describe import describe_scene

KINDS = ("caption", "caption_chat", "chat", "grounded", "description", "exist", "choice")
EXIST_STREAM, CHOICE_STREAM = 77, 78  # the drills' random streams (independent of the generator's streams)
TEMPLATE = "zephyr"


@dataclass(frozen=True)
class Document:
    """One pretraining document: its kind and the pieces its text is tokenized in."""

    kind: str
    pieces: tuple[str, ...]

    @property
    def text(self) -> str:
        """The document as one string, the image placeholder removed (what the tokenizer is trained on)."""
        return "".join(self.pieces).replace(IMAGE_PLACEHOLDER, "")


def encode_document(tokenizer, doc: Document) -> list[int]:
    """Token ids of ``doc``: each piece as the training stages encode it, image placeholders dropped."""
    ids: list[int] = []
    for piece in doc.pieces:
        ids += [t for t in encode_with_image(tokenizer, piece) if t != IMAGE_TOKEN_ID]
    return ids


class PieceTokens:
    """Token ids of every distinct piece of ``docs``, each piece encoded once, in one batch.

    ``pieces(doc)``: one int32 array per piece, as ``encode_document`` encodes that piece alone;
    ``document(doc)``: their concatenation, ``encode_document(tokenizer, doc)`` as an array. A document whose
    pieces were not among ``docs`` raises ``KeyError``.
    """

    def __init__(self, tokenizer, docs: Iterable[Document]):
        unique = list(dict.fromkeys(p for d in docs for p in d.pieces))
        chunks, owner = [], []  # the text between image placeholders, as ``encode_with_image`` encodes it
        for i, piece in enumerate(unique):
            for chunk in piece.split(IMAGE_PLACEHOLDER):
                if chunk:
                    chunks.append(chunk)
                    owner.append(i)
        parts: list[list] = [[] for _ in unique]
        for i, ids in zip(owner, encode_batch(tokenizer, chunks)):
            parts[i].append(ids)
        self.ids = {piece: np.fromiter(chain.from_iterable(p), dtype=np.int32) for piece, p in zip(unique, parts)}

    def pieces(self, doc: Document) -> list[np.ndarray]:
        return [self.ids[p] for p in doc.pieces]

    def document(self, doc: Document) -> np.ndarray:
        return np.concatenate(self.pieces(doc)) if doc.pieces else np.zeros(0, dtype=np.int32)


def encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """``[tokenizer.encode(t, add_special_tokens=False) for t in texts]``, in the fast tokenizer's Rust threads
    when it has them (``backend_tokenizer``), else one text at a time."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


def build_corpus(world: str | Path | SynthManifest, drill_rounds: int = 1) -> list[Document]:
    """Every document of every kind (``KINDS``) from ``world``'s training files, in a fixed order.
    ``drill_rounds``: existence and multiple-choice drills per scene, each round other questions (the first
    round is the same whatever the number of rounds)."""
    manifest = world if isinstance(world, SynthManifest) else SynthManifest.load(world)
    align = _records(manifest.path("align"))
    finetune = _records(manifest.path("finetune"))
    align_scenes = _scenes(manifest.path("scenes", "align"))
    finetune_scenes = _scenes(manifest.path("scenes", "finetune"))
    eos = get_template(TEMPLATE).stop
    docs = [Document("caption", (_first_reply(r).strip() + eos,)) for r in align]
    docs += [Document("caption_chat", _chat(r.turns)) for r in align]
    docs += [Document("chat", _chat(r.turns)) for r in finetune]
    docs += [Document("grounded", _chat(_ground(r, _scene_of(finetune_scenes, r)))) for r in finetune]
    docs += [Document("description", (describe_scene(s) + eos,)) for s in align_scenes.values()]
    scenes = [*align_scenes.values(), *finetune_scenes.values()]
    for kind, conversation, stream in (("exist", existence_conversation, EXIST_STREAM),
                                       ("choice", choice_conversation, CHOICE_STREAM)):
        for r in range(drill_rounds):
            docs += _drills(kind, conversation, stream, scenes, manifest.seed, r)
    return [d for d in docs if d.pieces]


def _drills(kind: str, conversation, stream: int, scenes: list[Scene], seed: int,
            round_: int = 0) -> list[Document]:
    """One ``kind`` document per scene: ``conversation(scene, rng, words)`` with the scene in words; each
    ``round_`` draws its own questions."""
    docs = []
    for i, scene in enumerate(scenes):
        rng = np.random.default_rng([seed, stream, i] if round_ == 0 else [seed, stream, i, round_])
        words = scene_in_words(scene)
        docs.append(Document(kind, _chat(conversation(scene, rng, words))))
    return docs


def corpus_stats(docs: list[Document]) -> dict[str, int]:
    """Documents per kind (every kind listed, zeros included)."""
    counts = Counter(d.kind for d in docs)
    return {k: counts.get(k, 0) for k in KINDS}


def _records(path: Path) -> list[Record]:
    good, bad = load_records(path)
    if bad:
        raise InputError(f"{path}: {len(bad)} malformed records, e.g. {bad[0]}; regenerate the world")
    return good


def _scenes(path: Path) -> dict[str, Scene]:
    rows = read_json_list(path)
    return {row["image"]: Scene.from_dict(row) for row in rows}


def read_json_list(path: Path) -> list[dict]:
    """A JSON list of objects (the scene files); anything else raises ``InputError`` naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read the scene graphs ({e}); regenerate the world") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of scene graphs, got {type(data).__name__}")
    return data


def _scene_of(scenes: dict[str, Scene], record: Record) -> Scene:
    if record.image not in scenes:
        raise InputError(f"finetune record {record.id}: no scene graph for image {record.image!r} in scenes/")
    return scenes[record.image]


def _first_reply(record: Record) -> str:
    return next(text for role, text in record.turns if role == "assistant")


def _chat(turns: list[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(text for _, text in render_turns(get_template(TEMPLATE), turns))


def scene_in_words(scene: Scene) -> str:
    """What the LM reads in place of an image: the scene's detailed caption."""
    return f"Image: {caption(scene, detailed=True)}"


def _ground(record: Record, scene: Scene) -> list[tuple[str, str]]:
    """The record's turns with its ``<image>`` replaced by the scene in words."""
    words = scene_in_words(scene)
    return [(role, text.replace(IMAGE_PLACEHOLDER, words)) for role, text in record.turns]


__all__ = ["KINDS", "Document", "PieceTokens", "build_corpus", "corpus_stats", "encode_batch", "encode_document",
           "scene_in_words"]
