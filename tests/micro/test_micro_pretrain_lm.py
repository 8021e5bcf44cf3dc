"""LM pretraining: packing and splitting, the loss goes down, runs repeat exactly for a seed."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
from micro_assets_testkit import tiny_corpus, tiny_tokenizer

from qmamba.errors import ConfigError, InputError
from qmamba.micro.corpus import Document, PieceTokens, encode_document
from qmamba.micro.instruct_lm import IGNORE
from qmamba.micro.pretrain_lm import (
    LMTrainConfig,
    accuracy_by_type,
    answer_accuracy,
    answer_hits,
    pack,
    pack_aligned,
    select_documents,
    split_documents,
    train_curriculum,
    train_lm,
)
from qmamba.models.mamba_lm import MambaLM
from qmamba.models.presets import LLM_PRESETS


def _rows(tmp_path_factory, seq_len: int = 64) -> torch.Tensor:
    tok, _ = tiny_tokenizer(tmp_path_factory)
    docs = [d for d in tiny_corpus(tmp_path_factory) if d.kind == "chat"]
    return pack([encode_document(tok, d) for d in docs], seq_len)


def _model(tmp_path_factory, seed: int = 0) -> MambaLM:
    tok, _ = tiny_tokenizer(tmp_path_factory)
    torch.manual_seed(seed)
    return MambaLM(dataclasses.replace(LLM_PRESETS["micro-mamba"](), vocab_size=len(tok)))


def test_pack_keeps_the_token_order_and_drops_only_the_tail():
    rows = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]], seq_len=4)
    assert rows.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    with pytest.raises(InputError, match="fewer than one row"):
        pack([[1, 2]], seq_len=4)


def test_split_documents_is_a_seeded_partition():
    docs = [Document("caption", (f"doc {i}",)) for i in range(100)]
    train, held = split_documents(docs, 0.1, seed=0)
    assert len(held) == 10 and len(train) == 90
    assert sorted(d.pieces for d in train + held) == sorted(d.pieces for d in docs)
    assert split_documents(docs, 0.1, seed=0) == (train, held)
    assert split_documents(docs, 0.1, seed=1)[1] != held


def test_the_loss_goes_down_on_a_tiny_corpus(tmp_path_factory):
    rows = _rows(tmp_path_factory)
    cfg = LMTrainConfig(steps=30, batch_size=4, micro_batch_size=0, seq_len=64, lr=3e-3)
    log = train_lm(_model(tmp_path_factory), rows, cfg, torch.device("cpu"), show_progress=False)
    first, last = log.losses[0], sum(log.losses[-5:]) / 5
    assert first > 5.0, f"a fresh model should be near ln(vocab), got {first:.3f}"
    assert last < 0.6 * first, f"loss {first:.3f} -> {last:.3f} over 30 steps"


def test_accumulation_matches_one_big_batch(tmp_path_factory):
    rows = _rows(tmp_path_factory)[:8]
    logs = []
    for micro in (0, 2):
        cfg = LMTrainConfig(steps=2, batch_size=4, micro_batch_size=micro, seq_len=64)
        logs.append(train_lm(_model(tmp_path_factory), rows, cfg, torch.device("cpu"), show_progress=False).losses)
    assert logs[0] == pytest.approx(logs[1], rel=1e-4)


def test_same_seed_same_losses_other_seed_other_losses(tmp_path_factory):
    rows = _rows(tmp_path_factory)
    def run(seed: int) -> list[float]:
        cfg = LMTrainConfig(steps=3, batch_size=2, seq_len=64, seed=seed, micro_batch_size=0)
        return train_lm(_model(tmp_path_factory, seed), rows, cfg, torch.device("cpu"), show_progress=False).losses

    assert run(0) == run(0)
    assert run(1) != run(0)


class _Oracle(torch.nn.Module):
    """A fake LM whose logits at t point at token t+1 of its input (what a perfect model predicts);
    ``miss_last`` makes every prediction of the end marker (id 0, which ends each reply) wrong."""

    def __init__(self, vocab: int, miss_last: bool = False):
        super().__init__()
        self.vocab, self.miss_last = vocab, miss_last

    def forward(self, ids):
        nxt = torch.cat([ids[:, 1:], ids[:, :1]], dim=1)  # (b, l)
        if self.miss_last:
            nxt[nxt == 0] = 1
        return types.SimpleNamespace(logits=torch.nn.functional.one_hot(nxt, self.vocab).float())


def test_answer_accuracy_scores_exactly_the_reply_tokens(tmp_path_factory):
    tok, _ = tiny_tokenizer(tmp_path_factory)
    docs = [d for d in tiny_corpus(tmp_path_factory) if d.kind == "grounded"][:3]
    cpu = torch.device("cpu")
    assert answer_accuracy(_Oracle(len(tok)), tok, docs, cpu) == 1.0
    assert answer_accuracy(_Oracle(len(tok), miss_last=True), tok, docs, cpu) == 0.0  # the end marker counts
    assert answer_accuracy(_model(tmp_path_factory), tok, docs, cpu) == 0.0  # an untrained LM
    assert answer_accuracy(_Oracle(len(tok)), tok, [], cpu) is None


def _one_at_a_time(model, tok, docs) -> list[bool]:
    """The reference: each document alone, encoded piece by piece with ``encode_document``."""
    hits = []
    for doc in docs:
        prompt = encode_document(tok, Document(doc.kind, doc.pieces[:1]))
        reply = encode_document(tok, Document(doc.kind, doc.pieces[1:2]))
        logits = model(torch.tensor([prompt + reply])).logits[0, len(prompt) - 1:-1]
        hits.append(bool((logits.argmax(-1) == torch.tensor(reply)).all()))
    return hits


def test_batched_answer_hits_are_those_of_one_document_at_a_time(tmp_path_factory):
    """Right-padded batches of documents of different lengths score each one as it scores alone."""
    tok, _ = tiny_tokenizer(tmp_path_factory)
    docs = [d for d in tiny_corpus(tmp_path_factory) if d.kind in ("grounded", "exist", "choice")][:40]
    model = _model(tmp_path_factory).eval()
    train_lm(model, _rows(tmp_path_factory), LMTrainConfig(steps=40, batch_size=4, micro_batch_size=0, seq_len=64,
                                                         lr=3e-3), torch.device("cpu"), show_progress=False)
    model.eval()
    with torch.no_grad():
        reference = _one_at_a_time(model, tok, docs)
    oracle = _one_at_a_time(_Oracle(len(tok)), tok, docs)
    assert 0 < sum(reference) < len(docs) and all(oracle)  # the trained model gets some right, not all
    cpu = torch.device("cpu")
    for batch in (1, 7, 64):
        assert answer_hits(model, tok, docs, cpu, batch=batch) == reference
    tokens = PieceTokens(tok, docs)
    assert answer_hits(model, tok, docs, cpu, batch=16, tokens=tokens) == reference


def test_accuracy_by_type_groups_the_first_questions(tmp_path_factory):
    docs = [d for d in tiny_corpus(tmp_path_factory) if d.kind == "grounded"][:30]
    hits = [i % 3 == 0 for i in range(len(docs))]
    by_type = accuracy_by_type(docs, hits)
    assert sum(v["questions"] for v in by_type.values()) == len(docs)
    assert sum(v["questions"] * v["accuracy"] for v in by_type.values()) == pytest.approx(sum(hits))
    assert "other" not in by_type


def test_bad_settings_fail_clearly():
    with pytest.raises(ConfigError, match="must divide"):
        LMTrainConfig(batch_size=8, micro_batch_size=3)
    with pytest.raises(ConfigError, match="heldout_fraction"):
        LMTrainConfig(heldout_fraction=0.0)
    with pytest.raises(ConfigError, match="curriculum_len=1; need"):
        LMTrainConfig(curriculum_steps=10, curriculum_len=1)
    with pytest.raises(ConfigError, match="drill_rounds=0; need at least 1"):
        LMTrainConfig(drill_rounds=0)


def test_training_kinds_select_documents(tmp_path_factory):
    docs = tiny_corpus(tmp_path_factory)
    # every kind but the opt-in multiple-choice drills by default
    assert select_documents(docs, LMTrainConfig().kinds) == [d for d in docs if d.kind != "choice"]
    assert any(d.kind == "choice" for d in docs)
    picked = select_documents(docs, ("caption", "grounded"))
    assert {d.kind for d in picked} == {"caption", "grounded"}
    assert len(picked) == sum(d.kind in ("caption", "grounded") for d in docs)
    with pytest.raises(ConfigError, match="unknown kinds"):
        LMTrainConfig(kinds=("caption", "chats"))
    with pytest.raises(ConfigError, match="choice_sft_kinds"):
        LMTrainConfig(choice_sft_kinds=("grounded", "choices"))
    with pytest.raises(ConfigError, match="curriculum_kinds"):
        LMTrainConfig(curriculum_kinds=("exists",))


def test_cuda_graph_refuses_split_steps():
    with pytest.raises(ConfigError, match="cuda_graph replays whole steps"):
        LMTrainConfig(cuda_graph=True, batch_size=8, micro_batch_size=4)
    assert LMTrainConfig(cuda_graph=True, batch_size=8, micro_batch_size=0).cuda_graph


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphed_pretraining_makes_the_eager_updates_on_gpu(tmp_path_factory):
    """The captured step and its replays, the optimizer outside: the losses and final weights of the eager loop."""
    rows = _rows(tmp_path_factory)
    runs = {}
    for graph in (False, True):
        model = _model(tmp_path_factory).cuda()
        cfg = LMTrainConfig(steps=8, batch_size=4, micro_batch_size=0, seq_len=64, cuda_graph=graph)
        log = train_lm(model, rows, cfg, torch.device("cuda"), show_progress=False)
        runs[graph] = (log.losses, [p.detach().float().cpu() for p in model.parameters()])
    (eager_losses, eager_w), (graph_losses, graph_w) = runs[False], runs[True]
    assert len(graph_losses) == 8 and graph_losses[-1] < graph_losses[0]
    assert graph_losses == pytest.approx(eager_losses, rel=2e-3), (graph_losses, eager_losses)
    for a, b in zip(eager_w, graph_w, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)


def test_aligned_rows_hold_whole_documents_packed_best_fit():
    docs = [[1, 2, 3], [4, 5, 6, 7], [8], [9, 10, 11, 12, 13, 14], [15, 16]]
    ids, labels = pack_aligned(docs, seq_len=5)
    # longest first: [9..13] (cut to a row) fills row 0; [4..7] opens row 1, which [8] then fills;
    # [1, 2, 3] opens row 2, which [15, 16] fills
    assert ids.tolist() == [[9, 10, 11, 12, 13], [4, 5, 6, 7, 8], [1, 2, 3, 15, 16]]
    assert torch.equal(labels, ids)
    ids, labels = pack_aligned([[1, 2, 3], [4, 5, 6]], seq_len=5)
    P = IGNORE
    assert ids.tolist() == [[1, 2, 3, 0, 0], [4, 5, 6, 0, 0]]
    assert labels.tolist() == [[1, 2, 3, P, P], [4, 5, 6, P, P]]
    with pytest.raises(InputError, match="no tokens"):
        pack_aligned([[]], seq_len=4)


def test_aligned_pretraining_learns_only_the_documents_tokens(tmp_path_factory):
    """Padding carries no loss: rows padded with garbage train exactly as rows padded with zeros."""
    tok, _ = tiny_tokenizer(tmp_path_factory)
    docs = [d for d in tiny_corpus(tmp_path_factory) if d.kind == "chat"][:40]
    ids, labels = pack_aligned([encode_document(tok, d) for d in docs], 96)
    assert (labels == IGNORE).any() and (ids[labels == IGNORE] == 0).all()
    garbage = torch.where(labels == IGNORE, torch.randint(1, len(tok), ids.shape), ids)
    cfg = LMTrainConfig(steps=4, batch_size=4, micro_batch_size=2, seq_len=96)
    runs = [train_lm(_model(tmp_path_factory), rows, cfg, torch.device("cpu"), False, labels).losses
            for rows in (ids, garbage)]
    # a causal model: what follows a document's last token never changes its losses
    assert runs[0] == pytest.approx(runs[1], rel=1e-5)
    with pytest.raises(ConfigError, match="packing='tight'"):
        LMTrainConfig(packing="tight")


def test_the_curriculum_trains_on_the_short_documents_first(tmp_path_factory):
    """Its steps are those of ``train_lm`` on the rows of the documents of at most curriculum_len tokens."""
    tok, _ = tiny_tokenizer(tmp_path_factory)
    texts = [encode_document(tok, d) for d in tiny_corpus(tmp_path_factory) if d.kind == "chat"]
    cut = sorted(len(t) for t in texts)[len(texts) // 3]
    short = [t for t in texts if len(t) <= cut]
    assert 0 < len(short) < len(texts)
    cfg = LMTrainConfig(steps=50, batch_size=4, micro_batch_size=2, seq_len=64, curriculum_steps=3, curriculum_len=cut)
    got = train_curriculum(_model(tmp_path_factory), texts, cfg, torch.device("cpu"), False).losses
    on_short = dataclasses.replace(cfg, steps=3)
    want = train_lm(_model(tmp_path_factory), pack(short, 64), on_short, torch.device("cpu"), False).losses
    on_all = train_lm(_model(tmp_path_factory), pack(texts, 64), on_short, torch.device("cpu"), False).losses
    assert got == pytest.approx(want, rel=1e-6) and got != pytest.approx(on_all, rel=1e-3)
    model = _model(tmp_path_factory)
    untouched = [p.detach().clone() for p in model.parameters()]
    assert train_curriculum(model, texts, dataclasses.replace(cfg, curriculum_steps=0), torch.device("cpu")).losses == []
    assert all(torch.equal(a, b) for a, b in zip(untouched, model.parameters(), strict=True))
    with pytest.raises(InputError, match="raise curriculum_len or set curriculum_steps=0"):
        train_curriculum(model, texts, dataclasses.replace(cfg, curriculum_len=2), torch.device("cpu"), False)
