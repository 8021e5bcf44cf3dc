"""Placing visual tokens into token sequences.

Each ``IMAGE_TOKEN_ID`` (-200) in ``input_ids`` is replaced by the n visual tokens of the next image
(images are taken in row-major placeholder order). Rows then have different lengths; they are
re-padded on the ``left`` (generation: every row ends at the last position) or the ``right``
(training). Labels get ``ignore_index`` at visual positions.

``splice_visual_tokens`` handles any layout and synchronises with the host to size its output.
``splice_at_column`` handles the fixed layout (one placeholder per row, in the same column of every row,
no padding) with shapes known in advance: no host synchronisation, so it can run inside a CUDA graph.
``image_column`` checks a batch for that layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qmamba.constants import IMAGE_TOKEN_ID
from qmamba.errors import InputError


@dataclass
class Spliced:
    inputs_embeds: Tensor  # (b, L, d)
    attention_mask: Tensor  # (b, L) 1 on real positions
    labels: Tensor | None  # (b, L)
    image_positions: Tensor  # (n_images, n) where each image's tokens went, as flat indices into b * L


def count_images(input_ids: Tensor) -> list[int]:
    return (input_ids == IMAGE_TOKEN_ID).sum(1).tolist()


def splice_visual_tokens(
    embed, input_ids: Tensor, visual: Tensor | None, attention_mask: Tensor | None = None,
    labels: Tensor | None = None, padding_side: str = "left", ignore_index: int = -100,
) -> Spliced:
    """input_ids (b, l) with placeholders, visual (n_images, n, d) -> embeddings (b, L, d).

    ``embed`` maps token ids (>= 0) to (.., d) embeddings.
    """
    b, l = input_ids.shape
    is_img = input_ids == IMAGE_TOKEN_ID  # (b, l)
    n_img = int(is_img.sum())
    n_vis = 0 if visual is None else visual.shape[0]
    if n_img != n_vis:
        per_row = ", ".join(f"row {i}: {c}" for i, c in enumerate(count_images(input_ids)) if c)
        raise InputError(f"the prompts hold {n_img} image placeholder(s) ({per_row or 'none'}) but {n_vis} image(s) "
                         f"were given; give one image per <image> placeholder")
    q = visual.shape[1] if visual is not None else 0
    real = attention_mask.bool() if attention_mask is not None else torch.ones_like(is_img)
    if bool((is_img & ~real).any()):
        raise InputError("an image placeholder sits on a padded position (attention_mask 0)")
    n_real = real.sum(1) + (q - 1) * is_img.sum(1)  # (b,) length of each row after splicing
    L = int(n_real.max()) if b else 0
    start = (L - n_real) if padding_side == "left" else torch.zeros_like(n_real)  # (b,)
    rank = torch.cumsum(real.long(), 1) - 1  # index of each position among the row's real tokens
    images_before = torch.cumsum(is_img.long(), 1) - is_img.long()
    dest = start[:, None] + rank + (q - 1) * images_before  # (b, l) new position of each real token

    text = real & ~is_img
    tok_embeds = embed(input_ids.clamp(min=0))  # (b, l, d)
    d = tok_embeds.shape[-1]
    out = tok_embeds.new_zeros(b, L, d)
    rows = torch.arange(b, device=input_ids.device)[:, None].expand(b, l)
    out[rows[text], dest[text]] = tok_embeds[text]
    img_rows, img_dest = rows[is_img], dest[is_img]  # (n_images,) in row-major order
    vis_pos = img_dest[:, None] + torch.arange(q, device=input_ids.device)  # (n_images, q)
    if n_img:
        out[img_rows[:, None].expand(-1, q), vis_pos] = visual.to(out.dtype)

    new_mask = torch.zeros(b, L, dtype=torch.long, device=input_ids.device)
    span = torch.arange(L, device=input_ids.device)[None, :]
    new_mask[(span >= start[:, None]) & (span < (start + n_real)[:, None])] = 1
    new_labels = None
    if labels is not None:
        new_labels = torch.full((b, L), ignore_index, dtype=labels.dtype, device=labels.device)
        new_labels[rows[text], dest[text]] = labels[text]
    return Spliced(out, new_mask, new_labels, img_rows[:, None] * L + vis_pos)


def image_column(input_ids: Tensor) -> int:
    """The column of the one image placeholder every row of ``input_ids`` (b, l) holds (the fixed layout of
    ``splice_at_column``); an ``InputError`` with the counts and columns found otherwise."""
    is_img = input_ids == IMAGE_TOKEN_ID  # (b, l)
    cols = is_img.to(torch.uint8).argmax(1)  # (b,)
    if not bool((is_img.sum(1) == 1).all()) or not bool((cols == cols[0]).all()):
        raise InputError(f"the captured multimodal prefill needs exactly one image placeholder per row, in the same "
                         f"column of every row (no padding); got placeholders per row {is_img.sum(1).tolist()} "
                         f"at columns {cols.tolist()}: use qmamba.generate(model, ...) for such prompts")
    return int(cols[0])


def splice_at_column(text: Tensor, visual: Tensor, column: int) -> Tensor:
    """The fixed layout: text embeddings (b, l, d) whose position ``column`` is each row's image placeholder,
    visual tokens (b, q, d) -> [text[:column], visual, text[column + 1:]] (b, l - 1 + q, d).

    Equal to ``splice_visual_tokens`` for such rows (no padding); the shapes depend on the input shapes only."""
    return torch.cat([text[:, :column], visual.to(text.dtype), text[:, column + 1:]], dim=1)  # (b, l - 1 + q, d)
