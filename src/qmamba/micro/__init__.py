"""The micro-world's pretrained backbones, made by qmamba's own scripts (``qmamba micro build``).

>>> from qmamba.micro import build_micro_assets
>>> record = build_micro_assets("micro", seed=0)  # doctest: +SKIP

Modules, in the order a build runs them: ``corpus`` (the LM's text from a synth world's training files;
``describe`` writes scene graphs as prose), ``tokenizer`` (byte-level BPE with the chat markers),
``pretrain_vision`` (SigLIP with the sigmoid image-text loss), ``pretrain_lm`` (the Mamba LM), ``loop``
(what the two trainers share), ``report`` (sizes, versions, README) and ``build`` (all of it, one call).
Sizes beyond the shipped tiny one: ``sizes`` (the small GPU tier and its cache folder), ``probe`` (a linear
probe of a frozen encoder), ``grounding`` (the LM answering from scenes in words) and ``gates`` (what a sized
build must reach, measured with both).
"""

from __future__ import annotations

from qmamba.micro.build import build_micro_assets
from qmamba.micro.corpus import Document, build_corpus, encode_document
from qmamba.micro.pretrain_lm import LMTrainConfig, pretrain_lm
from qmamba.micro.pretrain_vision import VisionTrainConfig, pretrain_vision
from qmamba.micro.tokenizer import SPECIAL_TOKENS, train_tokenizer

__all__ = ["SPECIAL_TOKENS", "Document", "LMTrainConfig", "VisionTrainConfig", "build_corpus", "build_micro_assets",
           "encode_document", "pretrain_lm", "pretrain_vision", "train_tokenizer"]
