"""Pretraining the micro Mamba LM: a causal LM over packed rows of the micro-world's text.

    result = pretrain_lm(docs, tokenizer, "micro/mamba", LMTrainConfig(steps=900))

The model is ``LLM_PRESETS["micro-mamba"]`` with ``vocab_size`` set to the tokenizer's size. Documents
(``corpus.build_corpus``) are split into train and held-out by a seeded shuffle, tokenized as the
training stages tokenize them, concatenated (each ends with ``<|endoftext|>``) and cut into rows of
``seq_len`` tokens. AdamW + warmup/cosine, bf16 autocast on CUDA only. Then, with ``sft_steps``, an
instruction tuning on the training conversations with the image in words (``instruct_lm``).
Reported: train loss (mean of the last 50 steps), held-out loss before and after, and held-out answer
accuracy: the share of first questions of held-out conversations whose reply (with its end marker)
greedy decoding reproduces, for ``chat`` (no image: a prior), ``grounded`` (the image given in words)
``exist`` (POPE-style existence drills on the image in words) and ``choice`` (multiple-choice drills) documents.

Written to ``out_dir``: config.json + model.safetensors (mamba_ssm format) + the tokenizer files.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from qmamba.errors import ConfigError, InputError
from qmamba.micro.corpus import KINDS, Document, PieceTokens
from qmamba.micro.instruct_lm import IGNORE, instruct_lm, reply_loss
from qmamba.micro.loop import LossLog, autocast, fit, pick_device, seed_everything
from qmamba.micro.tokenizer import save_tokenizer
from qmamba.models.mamba_lm import MambaLM
from qmamba.models.presets import LLM_PRESETS


@dataclass
class LMTrainConfig:
    """How the micro LM is pretrained (the defaults are those of the shipped micro LM; ``qmamba micro build``)."""

    steps: int = 900
    batch_size: int = 8  # rows per optimizer step
    micro_batch_size: int = 4  # rows per forward pass (about 1k tokens fit a CPU's caches); 0: batch_size
    seq_len: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_ratio: float = 0.05
    grad_clip: float = 1.0
    heldout_fraction: float = 0.02  # of the documents
    eval_rows: int = 64  # held-out rows scored for the held-out loss
    eval_questions: int = 200  # held-out conversations per kind for the answer accuracy
    seed: int = 0
    # on a GPU, each step's forward and backward replayed from one CUDA graph per training (``loop.fit``; needs
    # micro_batch_size 0 or batch_size): the same updates with the host's launches taken out
    # (benchmarks/micro_lm_step.py times both); the tunings then pad every batch to their longest row, one shape
    cuda_graph: bool = False
    # how documents become pretraining rows: "stream" cuts their concatenation every seq_len tokens (a row may
    # begin mid-document, so a reply can be trained without the scene it answers from); "aligned" begins every
    # row at a document's start: whole documents packed best-fit into rows, the rest padded (a document longer
    # than a row keeps its start). benchmarks/micro_lm_rows.py measures both on a size's world
    packing: str = "stream"
    # Document kinds trained on: corpus.KINDS but "choice" by default. The multiple-choice drills are opt-in
    # because they take share from the existence drills (benchmarks/micro_lm_grounding.py measures both)
    kinds: tuple[str, ...] = tuple(k for k in KINDS if k != "choice")
    # existence and multiple-choice drills per scene (``corpus.build_corpus``), each round other questions: more
    # answers that need the scene read, from the same world
    drill_rounds: int = 1
    # a curriculum before the pretraining: this many steps on rows of the documents of curriculum_kinds of at
    # most curriculum_len tokens (the smallest scenes), then the pretraining on all. Carrying a fact through the
    # scan, which every scene-in-words answer needs, is learned on short contexts first and then carries to long
    # ones (benchmarks/micro_recall_probe.py; RESULTS.md, "The existence drills' order")
    curriculum_steps: int = 0
    curriculum_len: int = 160
    curriculum_kinds: tuple[str, ...] = ("grounded", "exist")  # the kinds answered from a scene in words
    # instruction tuning after pretraining (``instruct_lm``): steps of conversations, loss on the replies only
    sft_steps: int = 0
    sft_batch_size: int = 32
    sft_lr: float = 1e-3
    sft_max_len: int = 512
    # 0: batches drawn at random; N: rows of similar length batched together within windows of N batches (fewer
    # padding tokens per step; the first small build's tuning batches were 68% tokens)
    sft_length_window: int = 0
    # "token": the tuning loss is the mean over reply tokens, so a caption weighs as many one-word answers as it
    # has tokens; "reply": the mean over replies of each reply's mean, every answer weighing the same (the share
    # of reply tokens in long replies: benchmarks/micro_lm_rows.py)
    sft_weighting: str = "token"
    sft_kinds: tuple[str, ...] = ("grounded", "exist")
    # then a second, shorter tuning from the tuned LM that adds the multiple-choice drills: after the first
    # tuning they add the multiple-choice skill without costing the existence one (benchmarks/micro_lm_grounding.py)
    choice_sft_steps: int = 0
    choice_sft_lr: float = 5e-4
    choice_sft_kinds: tuple[str, ...] = ("grounded", "exist", "choice")

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 2:
            raise ConfigError(f"LM pretraining: steps={self.steps}, batch_size={self.batch_size}, "
                              f"seq_len={self.seq_len}; need steps >= 1, batch_size >= 1, seq_len >= 2")
        if self.micro_batch_size < 0 or (self.micro_batch_size and self.batch_size % self.micro_batch_size):
            raise ConfigError(f"LM pretraining: micro_batch_size={self.micro_batch_size} must divide "
                              f"batch_size={self.batch_size} (or be 0 for no accumulation)")
        if self.cuda_graph and self.micro_batch_size not in (0, self.batch_size):
            raise ConfigError(f"LM pretraining: cuda_graph replays whole steps; micro_batch_size="
                              f"{self.micro_batch_size} splits them (use 0, or cuda_graph false)")
        if self.curriculum_steps < 0 or self.curriculum_len < 2:
            raise ConfigError(f"LM pretraining: curriculum_steps={self.curriculum_steps}, curriculum_len="
                              f"{self.curriculum_len}; need curriculum_steps >= 0 and curriculum_len >= 2")
        if self.drill_rounds < 1:
            raise ConfigError(f"LM pretraining: drill_rounds={self.drill_rounds}; need at least 1")
        if self.sft_weighting not in ("token", "reply"):
            raise ConfigError(f"LM tuning: sft_weighting={self.sft_weighting!r}; expected 'token' or 'reply'")
        if self.packing not in ("stream", "aligned"):
            raise ConfigError(f"LM pretraining: packing={self.packing!r}; expected 'stream' or 'aligned'")
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(f"LM pretraining: heldout_fraction={self.heldout_fraction}; expected 0 < f < 1")
        for name in ("kinds", "sft_kinds", "choice_sft_kinds", "curriculum_kinds"):
            kinds = getattr(self, name)
            unknown = sorted(set(kinds) - set(KINDS))
            if unknown or not kinds:
                raise ConfigError(f"LM pretraining: {name}={kinds} has unknown kinds {unknown} or is empty; "
                                  f"choose from {KINDS}")


# -------------------------------------------------------------------------------------------- data
def select_documents(docs: list[Document], kinds: tuple[str, ...]) -> list[Document]:
    """The documents of ``kinds``, in their order."""
    return [d for d in docs if d.kind in kinds]


def split_documents(docs: list[Document], fraction: float, seed: int) -> tuple[list[Document], list[Document]]:
    """(train, held-out): a seeded shuffle of ``docs``, the first ``fraction`` (at least one) held out."""
    if len(docs) < 2:
        raise InputError(f"LM pretraining needs at least 2 documents, got {len(docs)}")
    order = np.random.default_rng([seed, 7]).permutation(len(docs))
    n_held = min(len(docs) - 1, max(1, round(fraction * len(docs))))
    return [docs[i] for i in order[n_held:]], [docs[i] for i in order[:n_held]]


def pack(token_lists, seq_len: int, what: str = "text") -> torch.Tensor:
    """Concatenate the documents' tokens (lists or arrays) and cut them into rows (n, seq_len); the tail is
    dropped."""
    arrays = [np.asarray(ids, dtype=np.int64) for ids in token_lists]
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    n = len(flat) // seq_len
    if n == 0:
        raise InputError(f"the {what} has {len(flat)} tokens, fewer than one row of seq_len={seq_len}; "
                         f"use a larger world or a shorter seq_len")
    return torch.from_numpy(flat[: n * seq_len].reshape(n, seq_len))  # (n, seq_len)


def pack_aligned(token_lists, seq_len: int, what: str = "text") -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (n, seq_len) that each begin at a document's start, and their labels: whole documents packed best-fit
    decreasing (longest first, each into the row it leaves least room in, a new row when none has room), the rest
    of a row padded (id 0, label ``IGNORE``); a document longer than a row keeps its first ``seq_len`` tokens.
    Deterministic: ties keep the documents' order."""
    docs = [np.asarray(ids, dtype=np.int64)[:seq_len] for ids in token_lists]
    rows: list[list[np.ndarray]] = []
    room: list[tuple[int, int]] = []  # (space left, row), sorted
    for i in sorted(range(len(docs)), key=lambda i: -len(docs[i])):
        n = len(docs[i])
        if n == 0:
            continue
        k = bisect.bisect_left(room, (n, -1))
        if k == len(room):
            rows.append([docs[i]])
            left, row = seq_len - n, len(rows) - 1
        else:
            left, row = room.pop(k)
            rows[row].append(docs[i])
            left -= n
        if left:
            bisect.insort(room, (left, row))
    if not rows:
        raise InputError(f"the {what} has no tokens to pack into rows of seq_len={seq_len}")
    ids = torch.zeros(len(rows), seq_len, dtype=torch.long)
    labels = torch.full((len(rows), seq_len), IGNORE, dtype=torch.long)
    for r, parts in enumerate(rows):
        tokens = torch.from_numpy(np.concatenate(parts))
        ids[r, :len(tokens)] = labels[r, :len(tokens)] = tokens
    return ids, labels


# ------------------------------------------------------------------------------------------- train
def train_lm(model: MambaLM, rows: torch.Tensor, cfg: LMTrainConfig, device: torch.device,
             show_progress: bool = True, labels: torch.Tensor | None = None) -> LossLog:
    """``cfg.steps`` optimizer steps over shuffled ``rows`` (reshuffled each epoch); returns the losses.
    ``labels`` (n, seq_len): the rows' targets where some are ``IGNORE`` (padding); None: every token."""
    micro = cfg.micro_batch_size or cfg.batch_size

    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, ...]:  # (ids,) or (ids, labels)
        return (rows[idx],) if labels is None else (rows[idx], labels[idx])

    def loss_of(ids: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        # the mean next-token loss over the labelled positions, computed on the device
        return reply_loss(model, ids, ids if targets is None else targets)

    def backward(idx: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for part in zip(*(t.split(micro) for t in batch(idx)), strict=True):
            with autocast(device):
                loss = loss_of(*(t.to(device) for t in part)) * (len(part[0]) / len(idx))
            loss.backward()
            total = total + loss.detach()
        return total

    graphed = (batch, loss_of) if cfg.cuda_graph and device.type == "cuda" and micro == cfg.batch_size else None
    return fit(model, len(rows), cfg.batch_size, cfg.steps, cfg.seed,
               (cfg.lr, cfg.weight_decay, cfg.betas, cfg.warmup_ratio), cfg.grad_clip, backward, "pretrain LM",
               show_progress, graphed=graphed)


def pack_rows(texts, cfg: LMTrainConfig, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rows, labels) of ``texts`` as ``cfg.packing`` packs them; labels None when every token is trained."""
    if cfg.packing == "aligned":
        return pack_aligned(texts, cfg.seq_len, what)
    return pack(texts, cfg.seq_len, what), None


def short_documents(texts, max_len: int) -> list:
    """The documents (token lists or arrays) of at most ``max_len`` tokens, in their order."""
    return [t for t in texts if len(t) <= max_len]


def train_curriculum(model: MambaLM, texts, cfg: LMTrainConfig, device: torch.device,
                     show_progress: bool = True) -> LossLog:
    """``cfg.curriculum_steps`` steps on the rows of the documents of at most ``cfg.curriculum_len`` tokens
    (an empty log when there are none to take)."""
    if cfg.curriculum_steps < 1:
        return LossLog()
    short = short_documents(texts, cfg.curriculum_len)
    if not short:
        shortest = min((len(t) for t in texts), default=0)
        raise InputError(f"LM curriculum: no training document has at most curriculum_len={cfg.curriculum_len} "
                         f"tokens (the shortest has {shortest}); raise curriculum_len or set curriculum_steps=0")
    rows, labels = pack_rows(short, cfg, "the curriculum's documents")
    return train_lm(model, rows, dataclasses.replace(cfg, steps=cfg.curriculum_steps), device, show_progress, labels)


@torch.no_grad()
def heldout_loss(model: MambaLM, rows: torch.Tensor, device: torch.device, batch: int = 4) -> float:
    """Mean next-token loss over ``rows`` (every row has the same length, so rows weigh equally)."""
    model.eval()
    losses = []
    for part in rows.split(batch):
        ids = part.to(device)
        with autocast(device):
            losses.append(float(model(ids, labels=ids).loss) * len(part))
    return sum(losses) / len(rows)


@torch.no_grad()
def answer_hits(model: MambaLM, tokenizer, docs: list[Document], device: torch.device, batch: int = 32,
                tokens: PieceTokens | None = None) -> list[bool]:
    """Per document: whether greedy decoding reproduces its first reply (piece 1, with its end marker) after the
    first user turn (piece 0); teacher-forced argmax, which is the same test. Documents of similar length go
    in one right-padded batch of ``batch``: the model is causal, so the pads after a reply change none of the
    logits read. ``tokens``: the documents' ``PieceTokens`` when already made."""
    if not docs:
        return []
    model.eval()
    tokens = tokens or PieceTokens(tokenizer, [Document(d.kind, d.pieces[:2]) for d in docs])
    pairs = [(tokens.ids[d.pieces[0]], tokens.ids[d.pieces[1]]) for d in docs]
    order = sorted(range(len(docs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    hits = [False] * len(docs)
    for k in range(0, len(order), batch):
        chunk = order[k:k + batch]
        ids = torch.zeros(len(chunk), max(len(p) + len(r) for p, r in (pairs[i] for i in chunk)), dtype=torch.long)
        for row, i in enumerate(chunk):
            seq = np.concatenate(pairs[i])
            ids[row, :len(seq)] = torch.from_numpy(seq.astype(np.int64))
        with autocast(device):
            predicted = model(ids.to(device)).logits.argmax(-1).cpu()  # (b, l)
        for row, i in enumerate(chunk):
            prompt, reply = pairs[i]
            got = predicted[row, len(prompt) - 1:len(prompt) + len(reply) - 1]
            hits[i] = bool((got == torch.from_numpy(reply.astype(np.int64))).all())
    return hits


def answer_accuracy(model: MambaLM, tokenizer, docs: list[Document], device: torch.device, batch: int = 32,
                    tokens: PieceTokens | None = None) -> float | None:
    """Share of documents whose first reply greedy decoding reproduces (``answer_hits``). None if no docs."""
    if not docs:
        return None
    hits = answer_hits(model, tokenizer, docs, device, batch, tokens)
    return sum(hits) / len(hits)


# --------------------------------------------------------------------------------------- entry point
def pretrain_lm(docs: list[Document], tokenizer, out_dir, cfg: LMTrainConfig | None = None, device=None,
                show_progress: bool = True, shape: dict | None = None) -> dict:
    """Train the micro LM on ``docs``, save it (+ tokenizer) to ``out_dir``; returns the measurements.
    ``shape``: ``MambaLMConfig`` fields over the ``micro-mamba`` preset (another size's LM)."""
    cfg = cfg or LMTrainConfig()
    device = pick_device(device)
    start = time.perf_counter()
    seed_everything(cfg.seed)
    phases = Phases()
    all_train, held_docs = split_documents(docs, cfg.heldout_fraction, cfg.seed)
    train_docs = select_documents(all_train, cfg.kinds)
    phases.done("split", f"{len(all_train)} training and {len(held_docs)} held-out documents")
    tokens = PieceTokens(tokenizer, docs)  # every distinct piece once: pretraining, tunings and accuracies share it
    phases.done("tokenize", f"{len(docs)} documents, {len(tokens.ids)} distinct pieces")
    train_text = [tokens.document(d) for d in train_docs]
    train_rows, train_labels = pack_rows(train_text, cfg, "training text")
    held_text = [tokens.document(d) for d in select_documents(held_docs, cfg.kinds)]
    held_rows = pack(held_text, cfg.seq_len, "held-out text")
    held_rows = held_rows[: cfg.eval_rows]
    phases.done("pack", f"{len(train_rows)} rows of {cfg.seq_len} tokens")
    config = dataclasses.replace(LLM_PRESETS["micro-mamba"](), **(shape or {}), vocab_size=len(tokenizer))
    model = MambaLM(config, device=device)
    before = heldout_loss(model, held_rows, device)
    phases.done("model", "built, held-out loss before training")
    reading = [t for d, t in zip(train_docs, train_text, strict=True) if d.kind in cfg.curriculum_kinds] \
        if cfg.curriculum_steps else []
    curriculum = train_curriculum(model, reading, cfg, device, show_progress)
    phases.done("curriculum", f"{cfg.curriculum_steps} steps")
    log = train_lm(model, train_rows, cfg, device, show_progress, train_labels)
    phases.done("pretrain", f"{cfg.steps} steps")
    sft = instruct_lm(model, tokenizer, train_docs, cfg, device, show_progress, tokens)
    phases.done("sft", f"{cfg.sft_steps} steps")
    choice_cfg = dataclasses.replace(cfg, sft_steps=cfg.choice_sft_steps, sft_lr=cfg.choice_sft_lr,
                                     sft_kinds=cfg.choice_sft_kinds)
    sft2 = instruct_lm(model, tokenizer, all_train, choice_cfg, device, show_progress, tokens)
    phases.done("choice_sft", f"{cfg.choice_sft_steps} steps")
    result = {"config": asdict(cfg), "device": str(device), "vocab_size": config.vocab_size,
              "parameters": model.num_parameters(), "train_rows": len(train_rows),
              "train_tokens": int(train_rows.numel() if train_labels is None else (train_labels != IGNORE).sum()),
              "heldout_rows": len(held_rows),
              "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len, "first_losses": log.losses[:5],
              "loss_curve": log.losses[:: max(1, cfg.steps // 20)], "train_loss": log.recent(50),
              "heldout_loss_before": before, "heldout_loss": heldout_loss(model, held_rows, device),
              "curriculum_loss": curriculum.recent(50) if curriculum.losses else None,
              "sft_first_losses": sft.losses[:5], "sft_loss": sft.recent(50) if sft.losses else None,
              "choice_sft_loss": sft2.recent(50) if sft2.losses else None}
    phases.done("heldout_loss", f"{len(held_rows)} rows")
    for kind in ("chat", "grounded", "exist", "choice"):
        picked = [d for d in held_docs if d.kind == kind and len(d.pieces) > 1][: cfg.eval_questions]
        hits = answer_hits(model, tokenizer, picked, device, tokens=tokens)
        result[f"answer_accuracy_{kind}"] = sum(hits) / len(hits) if hits else None
        if kind == "grounded":
            result["answer_accuracy_grounded_by_type"] = accuracy_by_type(picked, hits)
    phases.done("answer_accuracy", f"up to {cfg.eval_questions} held-out questions per kind")
    model.save_pretrained(out_dir, dtype=torch.float32)
    save_tokenizer(tokenizer, out_dir)
    result["seconds"] = time.perf_counter() - start
    result["phase_seconds"] = phases.seconds
    return result


class Phases:
    """Seconds of each part of ``pretrain_lm`` since the previous one, logged as each ends (``seconds``)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def done(self, name: str, what: str = "") -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 3)
        self.last = now
        logging.getLogger("qmamba").info("pretrain LM phase %s: %.1f s%s", name, self.seconds[name],
                                         f" ({what})" if what else "")


def accuracy_by_type(docs: list[Document], hits: list[bool]) -> dict[str, dict]:
    """{question type: {"questions", "accuracy"}} of the first questions of ``docs`` (``grounding.question_type``
    of the first user turn), most frequent type first."""
    from qmamba.micro.grounding import question_type, user_message

    groups: dict[str, list[bool]] = {}
    for doc, hit in zip(docs, hits):
        groups.setdefault(question_type(user_message(doc.pieces[0])), []).append(hit)
    return {t: {"questions": len(h), "accuracy": sum(h) / len(h)}
            for t, h in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))}
