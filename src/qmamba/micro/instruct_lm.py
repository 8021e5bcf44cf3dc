"""Instruction tuning of the micro LM (its "zephyr" step): the loss on the assistant replies only.

    log = instruct_lm(model, tokenizer, docs, cfg, device)      # after pretraining, same model

Pretraining spreads the loss over every token, so a reply word ("yes", "no", "2") weighs about 1/60 of a
conversation and a skill that hangs on it, such as POPE-style existence over the whole context, stays at
chance. As with mamba-2.8b-zephyr, a short tuning on conversations with the loss on the replies only
(user turns labelled ``ignore_index``) teaches the model to answer from its context. Documents are the
training documents of ``cfg.sft_kinds`` (the image given in words), right-padded per batch. Their tokens come
from a ``corpus.PieceTokens`` (each distinct piece encoded once; pass the pretraining's to reuse it):
``labelled`` gives the rows ``reply_labels`` gives, from the pieces' token arrays.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from qmamba.data.chat import IMAGE_TOKEN_ID, encode_with_image
from qmamba.micro.corpus import Document, PieceTokens
from qmamba.micro.loop import LossLog, autocast, fit

IGNORE = -100


def reply_labels(tokenizer, doc: Document, max_len: int) -> tuple[list[int], list[int]]:
    """(ids, labels) of a chat document: pieces alternate user / assistant; user tokens are ``IGNORE``."""
    ids: list[int] = []
    labels: list[int] = []
    for i, piece in enumerate(doc.pieces):
        toks = [t for t in encode_with_image(tokenizer, piece) if t != IMAGE_TOKEN_ID]
        ids += toks
        labels += toks if i % 2 else [IGNORE] * len(toks)
    return ids[:max_len], labels[:max_len]


def labelled(pieces: list[np.ndarray], max_len: int, per_reply: bool = False) -> tuple[np.ndarray, ...]:
    """``reply_labels`` from the token arrays of a document's pieces (``PieceTokens.pieces``): (ids, labels);
    with ``per_reply`` also each position's weight, 1 / (its reply's length) on reply tokens, else 0, so that
    every reply weighs the same in ``reply_loss`` whatever its length."""
    ids = np.concatenate(pieces)
    labels = np.concatenate([p if i % 2 else np.full(len(p), IGNORE, dtype=p.dtype) for i, p in enumerate(pieces)])
    if not per_reply:
        return ids[:max_len], labels[:max_len]
    weights = np.concatenate([np.full(len(p), 1.0 / len(p) if i % 2 else 0.0, dtype=np.float32)
                              for i, p in enumerate(pieces)])
    return ids[:max_len], labels[:max_len], weights[:max_len]


def reply_rows(tokens: PieceTokens, docs: list[Document], kinds, max_len: int,
               per_reply: bool = False) -> list[tuple[np.ndarray, ...]]:
    """The tuning rows of the documents of ``kinds`` that hold a reply: ``labelled`` of each."""
    return [labelled(tokens.pieces(d), max_len, per_reply) for d in docs if d.kind in kinds and len(d.pieces) > 1]


def pad_batch(rows: list[tuple], length: int | None = None) -> tuple[torch.Tensor, ...]:
    """Right-padded (b, l) ids (pad 0) and labels (pad ``IGNORE``), and the weights when the rows have them (pad
    0): a causal model never sees the pads. ``l``: the longest row's length, or ``length`` (at least that)."""
    length = length or max(len(row[0]) for row in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    out = [ids, labels] + ([torch.zeros(len(rows), length)] if len(rows[0]) > 2 else [])
    for r, row in enumerate(rows):
        for tensor, values in zip(out, row, strict=True):
            tensor[r, :len(values)] = torch.as_tensor(values)
    return tuple(out)


def reply_loss(model, ids: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (reply) positions; with ``weights`` (b, l), the
    weighted mean (``labelled(..., per_reply=True)``: the mean over replies of each reply's mean)."""
    logits = model(ids).logits[:, :-1]  # (b, l-1, v)
    if weights is None:
        return F.cross_entropy(logits.float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)
    losses = F.cross_entropy(logits.float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE,
                             reduction="none")  # (b (l-1),): 0 where ignored
    w = weights[:, 1:].flatten()
    return (losses * w).sum() / w.sum().clamp_min(1e-6)


def instruct_lm(model, tokenizer, docs: list[Document], cfg, device: torch.device,
                show_progress: bool = True, tokens: PieceTokens | None = None) -> LossLog:
    """``cfg.sft_steps`` steps of ``cfg.sft_batch_size`` conversations (reshuffled each epoch). ``tokens``: the
    documents' ``PieceTokens`` when already made (None: made here, of the documents of ``cfg.sft_kinds``)."""
    if cfg.sft_steps < 1:
        return LossLog()
    start = time.perf_counter()
    if tokens is None:
        tokens = PieceTokens(tokenizer, [d for d in docs if d.kind in cfg.sft_kinds])
    rows = reply_rows(tokens, docs, cfg.sft_kinds, cfg.sft_max_len, cfg.sft_weighting == "reply")
    logging.getLogger("qmamba").info("instruct LM: %d rows of %s in %.1f s", len(rows), "/".join(cfg.sft_kinds),
                                     time.perf_counter() - start)
    if not rows:
        return LossLog()

    def backward(idx: torch.Tensor) -> torch.Tensor:
        batch = [t.to(device) for t in pad_batch([rows[int(i)] for i in idx])]
        with autocast(device):
            loss = reply_loss(model, *batch)
        loss.backward()
        return loss.detach()

    window = cfg.sft_length_window
    lengths = torch.tensor([len(row[0]) for row in rows]) if window else None
    graphed = None
    if cfg.cuda_graph and device.type == "cuda":  # one shape: every batch padded to the longest row
        longest = max(len(row[0]) for row in rows)
        graphed = (lambda idx: pad_batch([rows[int(i)] for i in idx], longest),
                   lambda *batch: reply_loss(model, *batch))
    return fit(model, len(rows), cfg.sft_batch_size, cfg.sft_steps, cfg.seed + 1,
               (cfg.sft_lr, cfg.weight_decay, cfg.betas, cfg.warmup_ratio), cfg.grad_clip, backward, "instruct LM",
               show_progress, lengths=lengths, window=window, graphed=graphed)


__all__ = ["IGNORE", "instruct_lm", "labelled", "pad_batch", "reply_labels", "reply_loss", "reply_rows"]
