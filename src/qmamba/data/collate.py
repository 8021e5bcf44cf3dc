"""Samples from ``ConversationDataset`` -> one right-padded training batch; bad samples are set aside.

    collate(samples, pad_token_id) -> {
        input_ids       (b, l) long, IMAGE_TOKEN_ID at each image position, pad_token_id on padding
        attention_mask  (b, l) long, 1 on real tokens
        labels          (b, l) long, -100 on prompts, images and padding
        pixel_values    (n_images, 3k, S, S), the rows holding an image in row order (absent if none)
        n_target_tokens int, labels[:, 1:] != -100: the tokens the shifted loss is taken over
        ids             [(source, id)] of the b rows kept
        bad             [(source, id, reason)] of the samples dropped
    }

b can be 0 when every sample was bad (input_ids then has shape (0, 0)). Use it in a DataLoader as
``collate_fn=functools.partial(collate, pad_token_id=tokenizer.pad_token_id)`` (picklable for workers).

``with_image_row(batch, pixel_shape, pad_token_id)`` appends one inert row (an image, no target) to a
batch that has no image or no row: under FSDP every rank must run the vision encoder and connector in
every micro-batch, or the ranks' collectives fall out of step; the row changes no loss and no count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from qmamba.constants import IGNORE_INDEX, IMAGE_TOKEN_ID
from qmamba.data.processor import pad_rows
from qmamba.errors import InputError


def collate(samples: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Pad the good samples on the right into a batch; list the bad ones in ``bad``."""
    if pad_token_id is None:
        raise InputError("collate: pad_token_id is None; set tokenizer.pad_token (Mamba's GPT-NeoX tokenizer: "
                         "use its eos token, <|endoftext|>)")
    good = [s for s in samples if "bad" not in s]
    bad = [(s["source"], s["id"], s["bad"]) for s in samples if "bad" in s]
    batch: dict[str, Any] = {"bad": bad, "ids": [(s["source"], s["id"]) for s in good]}
    if not good:
        empty = torch.zeros(0, 0, dtype=torch.long)
        return {**batch, "input_ids": empty, "attention_mask": empty.clone(), "labels": empty.clone(),
                "n_target_tokens": 0}
    for s in good:
        if len(s["input_ids"]) != len(s["labels"]):
            raise InputError(f"{s['source']} record {s['id']}: {len(s['input_ids'])} input_ids but "
                             f"{len(s['labels'])} labels; they must be the same length")
    batch.update(pad_rows([s["input_ids"] for s in good], pad_token_id, padding_side="right"))
    batch["labels"] = pad_labels([s["labels"] for s in good])  # (b, l)
    pixels = [s["pixel_values"] for s in good if s.get("pixel_values") is not None]
    if pixels:
        batch["pixel_values"] = torch.stack(pixels)  # (n_images, 3k, S, S)
    batch["n_target_tokens"] = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return batch


def pad_labels(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Label lists -> (b, max_len) long, right-padded with -100."""
    out = torch.full((len(rows), max(len(r) for r in rows)), IGNORE_INDEX, dtype=torch.long)  # (b, l)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def with_image_row(batch: dict[str, Any], pixel_shape: tuple[int, int, int], pad_token_id: int) -> dict[str, Any]:
    """``batch`` plus, if it holds no image, one row ``[IMAGE_TOKEN_ID, pad, ...]`` (attention 1 on the image
    only, labels all -100) with zero pixels of ``pixel_shape`` (3k, S, S); ``n_target_tokens`` is unchanged.
    ``dummy_rows`` counts the rows added (0 or 1)."""
    if "pixel_values" in batch:
        return {**batch, "dummy_rows": 0}
    b, l = batch["input_ids"].shape
    l = max(l, 1)
    ids = torch.full((1, l), pad_token_id, dtype=torch.long)  # (1, l)
    ids[0, 0] = IMAGE_TOKEN_ID
    mask = torch.zeros(1, l, dtype=torch.long)
    mask[0, 0] = 1

    def grow(x: torch.Tensor, fill: int) -> torch.Tensor:  # (b, l') -> (b, l) padded with ``fill``
        return torch.cat([x, torch.full((b, l - x.shape[1]), fill, dtype=torch.long)], dim=1)

    return {**batch, "dummy_rows": 1,
            "input_ids": torch.cat([grow(batch["input_ids"], pad_token_id), ids]),  # (b + 1, l)
            "attention_mask": torch.cat([grow(batch["attention_mask"], 0), mask]),
            "labels": torch.cat([grow(batch["labels"], IGNORE_INDEX), torch.full((1, l), IGNORE_INDEX)]),
            "pixel_values": torch.zeros(1, *pixel_shape)}  # (1, 3k, S, S)
