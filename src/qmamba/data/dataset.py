"""Training samples from LLaVA conversation files: several files mixed by weight, tokenized per stage.

    ds = ConversationDataset([DataSource("llava_v1_5_mix665k.json", image_root="data/"), ...],
                             tokenizer, transform, stage="finetune")
    ds[i] -> {"input_ids": [int], "labels": [int], "pixel_values": (3k, S, S) | None, "id", "source"}
          or {"bad": reason, "id", "source"}        a missing/corrupt image, a prompt longer than max_length

Data formats (``qmamba.stages`` says which stage reads which; labels -100 are ignored; the model shifts
labels by one itself):
    align     IMAGE + caption + eos; labels on caption + eos. The caption is the record's first assistant
              turn; the human prompt is dropped and no chat template is used (Cobra's alignment).
    finetune  the chat template over all turns, tokenized turn by turn; labels on each assistant turn
              (the reply and its end-of-turn marker, e.g. ``<|endoftext|>``), -100 on user turns.

Lengths count the image as ONE token (IMAGE_TOKEN_ID); the model splices in n_visual tokens in its
place, so a row grows by n_visual - 1 inside the model. ``max_length`` truncates the tail; it never cuts
the prompt (which holds the image): a sample whose prompt leaves no room for one target token is bad.

Weights: a source of n records with weight w contributes floor(w) copies of every record plus a
subset of round((w - floor(w)) * n) records drawn without replacement from a generator seeded by
(seed, name), so the subset is the same on every rank and every restart. Weight 0 leaves a source out.
Bad records found while loading are not items: they are listed in ``bad_records``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from qmamba.constants import IGNORE_INDEX, IMAGE_TOKEN_ID
from qmamba.data.chat import ChatTemplate, encode_with_image, get_template, render_turns
from qmamba.data.image import load_image
from qmamba.data.llava import BadRecord, Record, load_records
from qmamba.errors import ConfigError, InputError
from qmamba.stages import DATA_FORMATS

IMAGE_POSITIONS = ("placeholder", "prefix")


@dataclass
class DataSource:
    """One conversation file. ``image_root``: the folder its image paths are relative to (default: the
    file's folder). ``weight``: how many times its records are drawn per epoch (fractions draw a fixed
    subset). ``name``: for reports and mixing counts (default: the file name without extension)."""

    path: str | Path
    image_root: str | Path | None = None
    weight: float = 1.0
    name: str | None = None

    def __post_init__(self):
        self.path = Path(self.path).expanduser()
        self.image_root = Path(self.image_root).expanduser() if self.image_root is not None else self.path.parent
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"data source {self.path}: weight={self.weight!r}; expected a number >= 0 "
                              f"(1 = every record once per epoch, 0.5 = half of them, 2 = each twice)")
        self.name = self.name or self.path.stem


def draw_records(n: int, weight: float, seed: int, name: str) -> np.ndarray:
    """Record indices (into a source of ``n`` records) drawn for one epoch at ``weight``, sorted."""
    whole = math.floor(weight)
    extra = round((weight - whole) * n)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    subset = np.sort(rng.choice(n, size=extra, replace=False)) if extra else np.zeros(0, dtype=np.int64)
    return np.concatenate([np.tile(np.arange(n), whole), subset]).astype(np.int64)


def estimate_length(record: Record, stage: str) -> int:
    """A cheap token-count estimate (whitespace words + 1 per image + 1 per turn marker), for grouping."""
    if stage == "align":
        return len(first_reply(record).split()) + 1 + (record.image is not None)
    words = sum(len(text.split()) for _, text in record.turns)
    return words + 2 * len(record.turns)


def first_reply(record: Record) -> str:
    return next(text for role, text in record.turns if role == "assistant")


# -------------------------------------------------------------------------------------------- encoding
def encode_align(tokenizer, record: Record, eos_id: int) -> tuple[list[int], list[int], int]:
    """IMAGE + caption + eos -> (ids, labels, prompt_len); labels on caption + eos."""
    caption = tokenizer.encode(first_reply(record).strip(), add_special_tokens=False) + [eos_id]
    prompt = [IMAGE_TOKEN_ID] if record.image is not None else []
    return prompt + caption, [IGNORE_INDEX] * len(prompt) + caption, len(prompt)


def encode_finetune(tokenizer, template: ChatTemplate, record: Record,
                    image_first: bool) -> tuple[list[int], list[int], int]:
    """The chat-templated turns -> (ids, labels, prompt_len), one turn at a time so that the label
    boundaries are exact; ``prompt_len``: the tokens before the first assistant turn (they hold the image)."""
    ids: list[int] = []
    labels: list[int] = []
    prompt_len = None
    for k, (role, text) in enumerate(render_turns(template, record.turns)):
        piece = encode_with_image(tokenizer, text, image_first=image_first and k == 0)
        if role == "assistant" and prompt_len is None:
            prompt_len = len(ids)
        ids += piece
        labels += piece if role == "assistant" else [IGNORE_INDEX] * len(piece)
    return ids, [IGNORE_INDEX if t == IMAGE_TOKEN_ID else t for t in labels], prompt_len


def truncate(ids: list[int], labels: list[int], prompt_len: int, max_length: int) -> tuple[list[int], list[int]]:
    """Cut the tail to ``max_length``; raises ``InputError`` when the prompt leaves no target token."""
    if prompt_len >= max_length:
        raise InputError(f"the prompt has {prompt_len} tokens (the image counted as one); max_length={max_length} "
                         f"leaves no room for the reply: raise max_length or drop the record")
    ids, labels = ids[:max_length], labels[:max_length]
    if all(t == IGNORE_INDEX for t in labels[1:]):
        raise InputError("no target token left after truncation (all labels are -100)")
    return ids, labels


# --------------------------------------------------------------------------------------------- dataset
class ConversationDataset(Dataset):
    """Weighted mixture of LLaVA files as training samples; see the module docstring.

    ``lengths[i]`` (a cheap token estimate, image as one token) and ``has_image[i]`` feed
    ``GroupedBatchSampler``; ``bad_records`` holds the records rejected while loading; ``n_records``
    counts every record read (valid and bad), the denominator for a bad-data fraction.
    """

    def __init__(self, sources: Sequence[DataSource | str | Path], tokenizer, transform=None,
                 chat_template: str = "zephyr", image_position: str = "placeholder", max_length: int = 2048,
                 stage: str = "finetune", seed: int = 0):
        _check_options(stage, image_position, max_length)
        self.sources = _as_sources(sources)
        self.tokenizer, self.transform, self.stage, self.max_length = tokenizer, transform, stage, max_length
        self.template = get_template(chat_template)
        self.image_first = image_position == "prefix"
        self.eos_id = tokenizer.eos_token_id
        if stage == "align" and self.eos_id is None:
            raise ConfigError("stage 'align' ends every caption with eos, but the tokenizer has no eos_token_id")
        self._load(seed)

    def _load(self, seed: int) -> None:
        self.records: list[Record] = []
        self.bad_records: list[BadRecord] = []
        self.image_roots: dict[str, Path] = {}
        items, self.n_records, self.items_per_source = [], 0, {}
        for src in self.sources:
            if src.weight == 0:
                self.items_per_source[src.name] = 0
                continue
            good, bad = load_records(src.path)
            self.n_records += len(good) + len(bad)
            self.bad_records += bad
            self.image_roots[str(src.path)] = src.image_root
            drawn = draw_records(len(good), src.weight, seed, src.name) + len(self.records)
            items.append(drawn)
            self.items_per_source[src.name] = len(drawn)
            self.records += good
        self.items = np.concatenate(items) if items else np.zeros(0, dtype=np.int64)  # (n_items,) record index
        self._check_loaded()
        self.lengths = [estimate_length(self.records[r], self.stage) for r in self.items]
        self.has_image = [self.records[r].image is not None for r in self.items]

    def _check_loaded(self) -> None:
        if len(self.items) == 0:
            first = "; ".join(str(b) for b in self.bad_records[:3]) or "every source has weight 0 or no records"
            raise InputError(f"no usable training records in {', '.join(str(s.path) for s in self.sources)} "
                             f"({len(self.bad_records)} bad): {first}")
        if self.transform is None and any(self.records[r].image is not None for r in self.items):
            raise ConfigError("the data has image records but no image transform was given; pass the model's "
                              "MultiImageTransform (e.g. Processor.from_pretrained(model_dir).transform)")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One sample, or ``{"bad": reason, "id", "source"}``; never raises for bad data."""
        record = self.records[int(self.items[i])]
        try:
            ids, labels = self.encode(record)
            pixels = self.pixels(record) if record.image is not None else None
        except InputError as e:
            return {"bad": str(e), "id": record.id, "source": record.source}
        return {"input_ids": ids, "labels": labels, "pixel_values": pixels, "id": record.id, "source": record.source}

    def encode(self, record: Record) -> tuple[list[int], list[int]]:
        """(input_ids, labels), truncated to ``max_length``; raises ``InputError`` if nothing to learn fits."""
        if self.stage == "align":
            ids, labels, prompt_len = encode_align(self.tokenizer, record, self.eos_id)
        else:
            ids, labels, prompt_len = encode_finetune(self.tokenizer, self.template, record, self.image_first)
        return truncate(ids, labels, prompt_len, self.max_length)

    def pixels(self, record: Record) -> torch.Tensor:
        """The record's image as (3k, S, S); a missing, corrupt or untransformable image raises ``InputError``."""
        path = self.image_roots[record.source] / record.image
        image = load_image(path)
        try:
            return self.transform([image])[0]  # (3k, S, S)
        except Exception as e:  # a decodable image the transform cannot take (e.g. 1x1 pixel crops)
            raise InputError(f"image {path}: the transform failed ({type(e).__name__}: {e})") from None


def _check_options(stage: str, image_position: str, max_length: int) -> None:
    if stage not in DATA_FORMATS:
        raise ConfigError(f"stage={stage!r}; expected one of {', '.join(DATA_FORMATS)}")
    if image_position not in IMAGE_POSITIONS:
        raise ConfigError(f"image_position={image_position!r}; expected one of {', '.join(IMAGE_POSITIONS)}")
    if not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"max_length={max_length!r}; expected an int >= 2 (an image or prompt token and a target)")


def _as_sources(sources: Sequence[DataSource | str | Path]) -> list[DataSource]:
    if isinstance(sources, (str, Path, DataSource)):
        sources = [sources]
    out = [s if isinstance(s, DataSource) else DataSource(s) for s in sources]
    if not out:
        raise ConfigError("no data sources given; pass at least one LLaVA JSON/JSONL file")
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"several data sources are named {', '.join(map(repr, dupes))}; give each a distinct name")
    return out
