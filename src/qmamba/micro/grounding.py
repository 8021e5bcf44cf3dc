"""How well a micro LM answers a world's evaluation questions when each image is replaced by its exact
detailed caption in words (the "grounded" documents of its pretraining): an upper bound on what any connector
can reach through this LM, and a gate of ``qmamba micro build --size small``.

``score_split``: POPE-like accuracy and yes-ratio of one split; ``score_mmbench``: MMBench-like accuracy per row
(letter by greedy first token among the row's options) and under CircularEval (every circular copy right),
beside a uniform guess. ``benchmarks/micro_lm_grounding.py`` prints both for a world and an LM.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qmamba.data.chat import encode_with_image, get_template, render_turns
from qmamba.data.processor import pad_rows
from qmamba.data.synth.scene import Scene
from qmamba.micro.corpus import scene_in_words
from qmamba.models.mamba_lm import MambaLM

SUFFIX = "Answer the question using a single word or phrase."
SPLITS = ("random", "popular", "adversarial")


def prompt_ids(tokenizer, scene: Scene, question: str, suffix: str = "\n" + SUFFIX) -> list[int]:
    """The zephyr-templated user turn: the scene in words, then the question (the assistant turn starts next)."""
    text = f"{scene_in_words(scene)}\n{question}{suffix}"
    ids: list[int] = []
    for _, piece in render_turns(get_template("zephyr"), [("user", text)]):
        ids += encode_with_image(tokenizer, piece)
    return ids


@torch.no_grad()
def score_split(lm: MambaLM, tokenizer, pope_dir: Path, split: str, batch: int = 64) -> dict:
    scenes = {s["image"]: Scene.from_dict(s) for s in json.loads((pope_dir / "scenes.json").read_text())}
    rows = [json.loads(line) for line in (pope_dir / "coco" / f"coco_pope_{split}.json").read_text().splitlines()]
    yes, no = (tokenizer.encode(w, add_special_tokens=False)[0] for w in ("yes", "no"))
    preds = []
    for k in range(0, len(rows), batch):
        chunk = rows[k:k + batch]
        padded = pad_rows([prompt_ids(tokenizer, scenes[r["image"]], r["text"]) for r in chunk], 0, "left")
        logits = _last_logits(lm, padded)  # (b, v)
        preds += (logits[:, yes] > logits[:, no]).tolist()
    truth = [r["label"] == "yes" for r in rows]
    return {"split": split, "questions": len(rows), "accuracy": sum(p == t for p, t in zip(preds, truth)) / len(rows),
            "yes_ratio": sum(preds) / len(rows)}


@torch.no_grad()
def score_mmbench(lm: MambaLM, tokenizer, mm_dir: Path, batch: int = 64) -> dict:
    """Accuracy per row and per circular group of the MMBench-like questions (the llava jsonl holds the prompts)."""
    scenes = {s["image"]: Scene.from_dict(s) for s in json.loads((mm_dir / "scenes.json").read_text())}
    tsv = next(mm_dir.glob("*.tsv")).read_text().splitlines()
    head = tsv[0].split("\t")
    answers = {int(r[0]): r[head.index("answer")] for r in (line.split("\t") for line in tsv[1:])}
    rows = [json.loads(line) for line in (mm_dir / "llava_mmbench_dev.jsonl").read_text().splitlines()]
    letters = {c: tokenizer.encode(c, add_special_tokens=False)[0] for c in "ABCD"}
    hits, chance, groups = 0, 0.0, {}
    for k in range(0, len(rows), batch):
        chunk = rows[k:k + batch]
        ids = [prompt_ids(tokenizer, scenes[r["image"]], r["text"], suffix="") for r in chunk]
        padded = pad_rows(ids, 0, "left")
        logits = _last_logits(lm, padded)  # (b, v)
        for r, row_logits in zip(chunk, logits):
            n = sum(f"\n{c}. " in r["text"] for c in "ABCD")
            options = list("ABCD")[:n]
            pred = max(options, key=lambda c: float(row_logits[letters[c]]))
            hits += pred == answers[r["question_id"]]
            chance += 1 / n
            group = groups.setdefault(r["question_id"] % 1_000_000, [True, n])
            group[0] &= pred == answers[r["question_id"]]
    return {"questions": len(rows), "accuracy": hits / len(rows), "chance": chance / len(rows),
            "circular": sum(ok for ok, _ in groups.values()) / len(groups),
            "circular_chance": sum((1 / n) ** n for _, n in groups.values()) / len(groups)}


def _last_logits(lm: MambaLM, padded: dict) -> torch.Tensor:
    """(b, v) next-token logits of left-padded rows, on the LM's device (bf16 autocast on CUDA)."""
    from qmamba.micro.loop import autocast

    device = next(lm.parameters()).device
    with autocast(device):
        out = lm(padded["input_ids"].to(device), attention_mask=padded["attention_mask"].to(device))
    return out.logits[:, -1].float().cpu()
