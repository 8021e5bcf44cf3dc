"""Helpers of the training-data tests: LLaVA files, small images, hand-built token ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from qmamba.data.image import ImageTransformConfig, MultiImageTransform

IMG = -200  # IMAGE_TOKEN_ID, spelled out so the tests do not take it from the code under test
IGN = -100


def convo(*turns: str, image: str | None = None, rid: str | None = None) -> dict:
    """A LLaVA record; turns alternate human, gpt, human, ..."""
    rec = {"conversations": [{"from": "human" if k % 2 == 0 else "gpt", "value": t} for k, t in enumerate(turns)]}
    if rid is not None:
        rec["id"] = rid
    if image is not None:
        rec["image"] = image
    return rec


def write_json(path: Path, records: list) -> Path:
    path.write_text(json.dumps(records, indent=1))
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def transform(towers: int = 1, size: int = 8) -> MultiImageTransform:
    return MultiImageTransform([ImageTransformConfig(image_size=size)] * towers)


def ids_of(tok, *tokens: str | int) -> list[int]:
    """Hand-built ids: each word or marker looked up in the vocabulary by itself; ints pass through."""
    out = []
    for t in tokens:
        if isinstance(t, int):
            out.append(t)
            continue
        i = tok.convert_tokens_to_ids(t)
        assert i is not None and i != tok.unk_token_id, f"{t!r} is not in the tiny vocabulary"
        out.append(i)
    return out
