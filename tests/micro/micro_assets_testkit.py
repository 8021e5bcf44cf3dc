"""Shared helpers of the micro-build tests: a tiny synth world, its corpus and tokenizer, and a tiny
build, each made once per test session (cached here, in folders from pytest's ``tmp_path_factory``)."""

from __future__ import annotations

from qmamba.data.synth import synthesize
from qmamba.micro.corpus import build_corpus
from qmamba.micro.pretrain_lm import LMTrainConfig
from qmamba.micro.pretrain_vision import VisionTrainConfig
from qmamba.micro.tokenizer import train_tokenizer

WORLD = {"n_align": 48, "n_finetune": 48, "n_eval": 6}
TINY_VISION = {"steps": 5, "batch_size": 8, "heldout": 16, "eval_batch": 8}
TINY_LM = {"steps": 5, "batch_size": 2, "micro_batch_size": 1, "seq_len": 64, "eval_rows": 4, "eval_questions": 4,
           "sft_steps": 2, "sft_batch_size": 2, "choice_sft_steps": 2}

_CACHE: dict = {}


def tiny_world(tmp_path_factory, seed: int = 0):
    """The manifest of a seed-``seed`` world of ``WORLD`` size (made once)."""
    key = ("world", seed)
    if key not in _CACHE:
        _CACHE[key] = synthesize(tmp_path_factory.mktemp(f"world{seed}"), seed=seed, **WORLD)
    return _CACHE[key]


def tiny_corpus(tmp_path_factory):
    """The corpus of the seed-0 tiny world."""
    if "corpus" not in _CACHE:
        _CACHE["corpus"] = build_corpus(tiny_world(tmp_path_factory))
    return _CACHE["corpus"]


def tiny_tokenizer(tmp_path_factory, vocab_size: int = 1024):
    """A tokenizer trained on the tiny corpus, saved in its own folder: (tokenizer, folder)."""
    key = ("tokenizer", vocab_size)
    if key not in _CACHE:
        folder = tmp_path_factory.mktemp("tokenizer")
        docs = tiny_corpus(tmp_path_factory)
        _CACHE[key] = (train_tokenizer([d.text for d in docs], vocab_size, folder), folder)
    return _CACHE[key]


def tiny_build_kwargs(seed: int = 0) -> dict:
    """``build_micro_assets`` settings for a build of a few seconds."""
    return {"seed": seed, "device": "cpu", "show_progress": False,
            "lm_config": LMTrainConfig(**TINY_LM, seed=seed),
            "vision_config": VisionTrainConfig(**TINY_VISION, seed=seed)}


def tiny_build(tmp_path_factory, name: str = "build", seed: int = 0) -> tuple:
    """(output folder, record) of a tiny build on the seed-0 tiny world (made once per name)."""
    from qmamba.micro.build import build_micro_assets

    key = ("build", name, seed)
    if key not in _CACHE:
        out = tmp_path_factory.mktemp(name)
        world = tiny_world(tmp_path_factory).root
        _CACHE[key] = (out, build_micro_assets(out, world_dir=world, **tiny_build_kwargs(seed)))
    return _CACHE[key]
