"""Batched admission for the continuous-batching engine: which waiting requests join at one step, which of them
can share one prefill, and the padded batch they prefill as.

    if admit_now(waiting, free_slots, running, since_admission, max_batch, ratio, wait_steps):  # else later
        taken = take_waiting(queue, free_slots, max_batch, max_tokens, visual_tokens)   # popped in queue order
        for group in prefill_groups(taken): ...                                         # lists of handles
            input_ids, attention_mask, inputs = prefill_batch(group, device)            # the prefill's inputs

When: an admission's prefill runs before the step's decode, so each one stalls the running rows for about a
fixed cost plus a little per request. When requests arrive one by one while others run (a server near
saturation frees a slot or two per step), admitting at every step pays that fixed cost per request. With
``ratio`` > 0 a step that has rows running admits only once the requests it could take reach ``ratio`` times the
running rows, or once ``wait_steps`` decode steps have passed since its last admission (so a request that comes
to a quiet engine joins at once, and a saturated one, whose queue never empties, still gathers its admissions);
with no row running it admits at once. ``ratio`` 0 (or ``wait_steps`` 0) admits at every step (as
text-generation-inference's ``waiting_served_ratio`` and ``max_waiting_tokens``; ``benchmarks/serve_load.py``
measures the server's defaults).

Budget: a step admits at most ``min(free slots, max_batch)`` requests, in queue order, and stops before the first
whose admission would make the padded prefill (rows x the longest row, an image counted as its visual tokens)
exceed ``max_tokens``; the first waiting request is always taken, however long, so nothing waits forever.

Groups: requests whose images have the same shape and dtype share a prefill (a row may hold any number of images;
text-only rows join the first group that has images). A request whose image placeholders do not match its images
in number prefills alone, so the model's error about it is its own (in a batch the counts of different rows
could balance and give one row another's image).

Padding: prompts are left-padded with id 0 under ``attention_mask`` 0 to the longest (padding changes no state,
so every row's state and last logits are its own prompt's); without padding the mask is None, as ``generate``
passes for a batch of one.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import Tensor

from qmamba.constants import IMAGE_TOKEN_ID


def count_images(input_ids: Tensor) -> int:
    """Image placeholders in one prompt (l,)."""
    return int((input_ids == IMAGE_TOKEN_ID).sum())


def prefill_length(request, visual_tokens: int) -> int:
    """The length of ``request``'s prompt in the LM: its ids with each image placeholder as ``visual_tokens``."""
    return request.input_ids.numel() + count_images(request.input_ids) * (visual_tokens - 1)


def admit_now(waiting: int, free: int, running: int, since_admission: int, max_batch: int, ratio: float,
               wait_steps: int) -> bool:
    """Whether a step admits now (see "When" in the module docstring): ``waiting`` requests queued, ``free``
    slots, ``running`` rows decoding, ``since_admission`` decode steps since the engine last admitted."""
    if waiting == 0 or free == 0:
        return False
    if running == 0 or ratio <= 0 or since_admission >= wait_steps:
        return True
    return min(waiting, free, max_batch) >= ratio * running


def take_waiting(queue: deque, free: int, max_batch: int, max_tokens: int, visual_tokens: int) -> list:
    """Pop the requests (handles) to admit now from the left of ``queue`` (see the module docstring); the caller
    holds the queue's lock."""
    taken, longest = [], 0
    while queue and len(taken) < min(free, max_batch):
        length = max(longest, prefill_length(queue[0].request, visual_tokens))
        if taken and (len(taken) + 1) * length > max_tokens:
            break
        taken.append(queue.popleft())
        longest = length
    return taken


def _image_key(request):
    """What a request's images must share with a batch's: None (no images), 'alone' (placeholders and images
    disagree in number), else (image shape, dtype)."""
    pixels = request.pixel_values
    images = 0 if pixels is None else pixels.shape[0]
    if count_images(request.input_ids) != images:
        return "alone"
    return None if pixels is None else (tuple(pixels.shape[1:]), pixels.dtype)


def prefill_groups(handles: list) -> list[list]:
    """``handles`` split into the groups that can share one prefill, each in queue order."""
    groups: dict = {}
    alone, text = [], []
    for handle in handles:
        key = _image_key(handle.request)
        if key == "alone":
            alone.append([handle])
        elif key is None:
            text.append(handle)
        else:
            groups.setdefault(key, []).append(handle)
    batches = list(groups.values())
    if text:
        if batches:
            batches[0] = sorted(batches[0] + text, key=handles.index)
        else:
            batches.append(text)
    return batches + alone


def prefill_batch(handles: list, device: torch.device) -> tuple[Tensor, Tensor | None, dict]:
    """The prefill inputs of ``handles``' requests as one batch: input_ids (b, L) left-padded with 0, the
    attention mask (b, L) (None when every prompt has the same length) and the model's other inputs
    (``pixel_values`` (n_images, 3k, S, S): every row's images in row order, when any row has one)."""
    prompts = [h.request.input_ids for h in handles]  # each (l_i,)
    longest = max(p.numel() for p in prompts)
    if all(p.numel() == longest for p in prompts):
        input_ids, mask = torch.stack(prompts), None  # (b, L)
    else:
        input_ids = torch.zeros(len(prompts), longest, dtype=torch.long)  # (b, L)
        mask = torch.zeros(len(prompts), longest, dtype=torch.long)  # (b, L)
        for row, p in enumerate(prompts):
            input_ids[row, longest - p.numel():] = p
            mask[row, longest - p.numel():] = 1
        mask = mask.to(device)
    pixels = [h.request.pixel_values for h in handles if h.request.pixel_values is not None]
    inputs = {"pixel_values": torch.cat([p.to(device, non_blocking=True) for p in pixels])} if pixels else {}
    return input_ids.to(device), mask, inputs
