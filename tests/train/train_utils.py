"""A tiny training world for tests: LLaVA-format files with images, a tokenizer directory, a run config."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image
from testing_utils import tiny_tokenizer

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}


def write_world(root: Path, n: int = 16, seed: int = 0, text_only: int = 0) -> dict[str, Path]:
    """Images of one flat colour with captions and Q&A about the colour; returns the paths."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    align, finetune = [], []
    for i in range(n):
        name = rng.choice(sorted(COLOURS))
        Image.new("RGB", (36, 30), COLOURS[name]).save(root / "images" / f"{i}.png")
        align.append({"id": f"a{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\ndescribe this image"},
            {"from": "gpt", "value": f"a {name} image ."}]})
        finetune.append({"id": f"f{i}", "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\nwhat is the colour ?"}, {"from": "gpt", "value": name},
            {"from": "human", "value": "is there a circle ?"}, {"from": "gpt", "value": "no"}]})
    for i in range(text_only):
        finetune.append({"id": f"t{i}", "conversations": [
            {"from": "human", "value": "how many"}, {"from": "gpt", "value": "two"}]})
    (root / "align.json").write_text(json.dumps(align))
    (root / "finetune.jsonl").write_text("".join(json.dumps(r) + "\n" for r in finetune))
    tiny_tokenizer().save_pretrained(str(root / "tokenizer"))
    return {"align": root / "align.json", "finetune": root / "finetune.jsonl", "images": root / "images",
            "tokenizer": root / "tokenizer"}


def run_config(world: dict[str, Path], out: Path, stages=("align", "finetune"), **stage_kw) -> dict:
    """A run config dict for the tiny-qmamba-128 preset on ``world``."""
    data = {"align": world["align"], "finetune": world["finetune"]}
    stage_list = [{"name": s, "sources": [{"path": str(data[s]), "image_root": str(world["images"])}],
                   "global_batch_size": 8, "micro_batch_size": 4, "num_workers": 0, "lr": 3e-3,
                   "max_length": 64, **stage_kw} for s in stages]
    return {"model": {"preset": "tiny-qmamba-128", "tokenizer": str(world["tokenizer"])}, "stages": stage_list,
            "run": {"output_dir": str(out), "precision": "fp32", "tensorboard": False, "seed": 0,
                    "checkpoint_every_steps": 2, "activation_checkpointing": True, "keep_last": 3}}
