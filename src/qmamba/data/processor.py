"""From a chat message and images to model inputs: chat template, tokenizer, image transform.

    processor(["What is this?"], [image]) -> {input_ids (b, l), attention_mask (b, l), pixel_values (b, 3k, S, S)}

A message that carries an image gets the ``<image>`` placeholder (prepended if the text has none);
the model replaces it with its visual tokens. Rows are left-padded for generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from qmamba.data.chat import IMAGE_PLACEHOLDER, encode_with_image, get_template, render_prompt
from qmamba.data.image import MultiImageTransform, load_image
from qmamba.data.tokenizer import load_tokenizer
from qmamba.errors import InputError
from qmamba.utils.config import read_json


class Processor:
    def __init__(self, tokenizer, transform: MultiImageTransform | None, chat_template: str = "zephyr",
                 image_position: str = "placeholder"):
        self.tokenizer = tokenizer
        self.transform = transform
        self.template = get_template(chat_template)
        self.image_first = image_position == "prefix"

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Processor:
        """The processor saved beside a multimodal model (config.json, preprocessor_config.json, tokenizer)."""
        path = Path(path)
        cfg = read_json(path / "config.json", "multimodal config")
        pre = read_json(path / "preprocessor_config.json", "image preprocessing config")
        return cls(load_tokenizer(path), MultiImageTransform(pre["transforms"]), cfg.get("chat_template", "zephyr"),
                   cfg.get("image_position", "placeholder"))

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def prompt_ids(self, message: str, has_image: bool, history: list[tuple[str, str]] | None = None,
                   chat: bool = True) -> list[int]:
        """Token ids (with IMAGE_TOKEN_ID placeholders) of one user message, ending where the reply starts."""
        n = message.count(IMAGE_PLACEHOLDER)
        if has_image and n == 0:
            message = f"{IMAGE_PLACEHOLDER}\n{message}"
        elif not has_image and n:
            raise InputError(f"the prompt has {n} {IMAGE_PLACEHOLDER} placeholder(s) but no image was given")
        elif n > 1:
            raise InputError(f"the prompt has {n} {IMAGE_PLACEHOLDER} placeholders but one image was given")
        text = render_prompt(self.template, message, history) if chat else message
        return encode_with_image(self.tokenizer, text, image_first=self.image_first)

    def __call__(self, messages: Sequence[str], images: Sequence[Image.Image | str | Path | None] | None = None,
                 chat: bool = True, padding_side: str = "left",
                 pixel_values: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Token ids and attention mask (b, l) of the prompts, and the pixels (n, 3k, S, S) of their images;
        ``pixel_values``: the images already preprocessed (``data.prefetch.prepare_images``), one row per
        image given, in order."""
        images = list(images) if images is not None else [None] * len(messages)
        if len(images) != len(messages):
            raise InputError(f"{len(messages)} prompts but {len(images)} images; give one (or None) per prompt")
        rows = [self.prompt_ids(m, im is not None, chat=chat) for m, im in zip(messages, images)]
        batch = pad_rows(rows, self.tokenizer.pad_token_id or 0, padding_side)
        present = [im for im in images if im is not None]
        if present:
            if self.transform is None:
                raise InputError("this model has no vision encoder; it cannot take images")
            if pixel_values is None:
                pixel_values = self.transform([load_image(im) if isinstance(im, (str, Path)) else im
                                               for im in present])
            elif pixel_values.shape[0] != len(present):
                raise InputError(f"{pixel_values.shape[0]} preprocessed images for {len(present)} images given")
            batch["pixel_values"] = pixel_values
        return batch

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def pad_rows(rows: list[list[int]], pad_id: int, padding_side: str = "left") -> dict[str, torch.Tensor]:
    """Lists of ids -> input_ids and attention_mask (b, max_len), padded on ``padding_side``."""
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), L, dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(L - len(r), L) if padding_side == "left" else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return {"input_ids": ids, "attention_mask": mask}
