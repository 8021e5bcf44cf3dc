"""LM instruction tuning: only reply tokens carry labels, padding is never learned, the reply loss goes down."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from micro_assets_testkit import tiny_corpus, tiny_tokenizer

from qmamba.errors import ConfigError
from qmamba.micro.corpus import encode_document
from qmamba.micro.instruct_lm import IGNORE, instruct_lm, labelled, pad_batch, reply_labels, reply_loss
from qmamba.micro.pretrain_lm import LMTrainConfig
from qmamba.models.mamba_lm import MambaLM
from qmamba.models.presets import LLM_PRESETS


def _docs(tmp_path_factory, kind: str = "exist"):
    return [d for d in tiny_corpus(tmp_path_factory) if d.kind == kind]


def test_labels_keep_the_replies_and_ignore_the_user_turns(tmp_path_factory):
    tok, _ = tiny_tokenizer(tmp_path_factory)
    doc = _docs(tmp_path_factory)[0]
    ids, labels = reply_labels(tok, doc, max_len=10_000)
    assert ids == encode_document(tok, doc)  # the same tokens the pretraining sees
    replies = [t for i, p in enumerate(doc.pieces) if i % 2 for t in encode_document(tok, type(doc)(doc.kind, (p,)))]
    assert [lab for lab in labels if lab != IGNORE] == replies
    assert labels[0] == IGNORE and len(replies) < len(ids) / 4
    short_ids, short_labels = reply_labels(tok, doc, max_len=5)
    assert short_ids == ids[:5] and short_labels == labels[:5]


def test_pad_batch_pads_right_with_ignored_labels():
    ids, labels = pad_batch([([5, 6, 7], [IGNORE, 6, 7]), ([8], [8])])
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert labels.tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]
    ids, labels = pad_batch([([8], [8])], length=3)  # one shape for every batch (a graphed tuning)
    assert ids.tolist() == [[8, 0, 0]] and labels.tolist() == [[8, IGNORE, IGNORE]]


def test_reply_loss_is_the_mean_over_labelled_positions():
    torch.manual_seed(0)
    model = MambaLM(dataclasses.replace(LLM_PRESETS["micro-mamba"](), vocab_size=32, n_layer=1, d_model=16))
    ids = torch.randint(0, 32, (2, 6))
    labels = torch.full_like(ids, IGNORE)
    labels[0, 3], labels[1, 5] = ids[0, 3], ids[1, 5]
    logp = model(ids).logits.float().log_softmax(-1)
    expected = -(logp[0, 2, ids[0, 3]] + logp[1, 4, ids[1, 5]]) / 2
    torch.testing.assert_close(reply_loss(model, ids, labels), expected)


def test_per_reply_weights_make_every_reply_weigh_the_same():
    pieces = [np.array([1, 2]), np.array([3]), np.array([4]), np.array([5, 6, 7, 8])]  # user, reply, user, reply
    ids, labels, weights = labelled(pieces, max_len=100, per_reply=True)
    assert ids.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert labels.tolist() == [IGNORE, IGNORE, 3, IGNORE, 5, 6, 7, 8]
    assert weights.tolist() == [0, 0, 1, 0, 0.25, 0.25, 0.25, 0.25]
    ids, labels, weights = pad_batch([(ids, labels, weights)], length=10)
    assert weights[0, 8:].tolist() == [0, 0] and labels[0, 8:].tolist() == [IGNORE, IGNORE]
    torch.manual_seed(0)
    model = MambaLM(dataclasses.replace(LLM_PRESETS["micro-mamba"](), vocab_size=32, n_layer=1, d_model=16))
    logp = model(ids).logits.float().log_softmax(-1)
    one = -logp[0, 1, 3]  # the one-token reply
    four = -sum(logp[0, t - 1, ids[0, t]] for t in range(4, 8)) / 4  # the four-token reply's mean
    torch.testing.assert_close(reply_loss(model, ids, labels, weights), (one + four) / 2)
    per_token = -(logp[0, 1, 3] + sum(logp[0, t - 1, ids[0, t]] for t in range(4, 8))) / 5
    torch.testing.assert_close(reply_loss(model, ids, labels), per_token)
    with pytest.raises(ConfigError, match="sft_weighting='answer'"):
        LMTrainConfig(sft_weighting="answer")


def test_the_reply_loss_goes_down(tmp_path_factory):
    tok, _ = tiny_tokenizer(tmp_path_factory)
    torch.manual_seed(0)
    model = MambaLM(dataclasses.replace(LLM_PRESETS["micro-mamba"](), vocab_size=len(tok)))
    cfg = LMTrainConfig(sft_steps=25, sft_batch_size=8, sft_lr=3e-3, warmup_ratio=0.1)
    log = instruct_lm(model, tok, _docs(tmp_path_factory), cfg, torch.device("cpu"), show_progress=False)
    assert len(log.losses) == 25
    first, last = log.losses[0], sum(log.losses[-5:]) / 5
    assert last < 0.5 * first, f"reply loss {first:.3f} -> {last:.3f}"
    empty = instruct_lm(model, tok, _docs(tmp_path_factory, "caption"), cfg, torch.device("cpu"), show_progress=False)
    assert empty.losses == []  # captions have no replies
    cfg = dataclasses.replace(cfg, sft_weighting="reply")
    log = instruct_lm(model, tok, _docs(tmp_path_factory), cfg, torch.device("cpu"), show_progress=False)
    assert len(log.losses) == 25 and all(np.isfinite(log.losses))


def test_length_grouped_batches_hold_similar_lengths_and_every_item_once():
    from qmamba.micro.loop import length_grouped

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(10, 500, (200,))
    order = torch.randperm(200, generator=gen)
    grouped = length_grouped(order, lengths, batch_size=8, window=5, gen=gen)
    assert sorted(grouped.tolist()) == list(range(200)), "a permutation of the items"
    batches = grouped.split(8)
    padded = sum(8 * int(lengths[b].max()) for b in batches[:-1])
    random_padded = sum(8 * int(lengths[b].max()) for b in order.split(8)[:-1])
    assert padded < 0.8 * random_padded, (padded, random_padded)  # fewer padding tokens than random batches
    for w in range(0, 200, 40):  # each batch's items come from one window of the epoch's order, sorted there
        window = set(order[w:w + 40].tolist())
        inside = [b for b in batches if set(b.tolist()) <= window]
        assert sum(len(b) for b in inside) == len(window)
    first_window = [next(w for w in range(0, 200, 40) if int(b[0]) in set(order[w:w + 40].tolist())) for b in batches]
    assert first_window != sorted(first_window), "the batches are shuffled across windows, not left in order"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_tuning_follows_the_eager_one_on_gpu(tmp_path_factory):
    """Batches padded to one shape and replayed from a graph: the eager tuning's losses (padding changes only the
    kernels' tiling, hence a tolerance) and the same final weights within it."""
    tok, _ = tiny_tokenizer(tmp_path_factory)
    runs = {}
    for graph in (False, True):
        torch.manual_seed(0)
        model = MambaLM(dataclasses.replace(LLM_PRESETS["micro-mamba"](), vocab_size=len(tok)), device="cuda")
        cfg = LMTrainConfig(sft_steps=10, sft_batch_size=8, sft_lr=3e-3, warmup_ratio=0.1, micro_batch_size=0,
                            cuda_graph=graph)
        log = instruct_lm(model, tok, _docs(tmp_path_factory), cfg, torch.device("cuda"), show_progress=False)
        runs[graph] = (log.losses, [p.detach().float().cpu() for p in model.parameters()])
    (eager, eager_w), (graphed, graphed_w) = runs[False], runs[True]
    assert len(graphed) == 10 and sum(graphed[-3:]) < sum(graphed[:3])
    assert graphed == pytest.approx(eager, rel=2e-2), (graphed, eager)
    for a, b in zip(eager_w, graphed_w, strict=True):
        torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-3)
