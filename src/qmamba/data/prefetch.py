"""Images off the critical path: while the model answers one batch, a background pool loads and preprocesses the
next batch's images.

    for batch, (images, pixels) in prefetched(batches, lambda b: prepare_images(processor, image_of, b, pool)):
        answer(batch, images, pixels)

``prefetched`` keeps one batch ahead (so memory holds two batches' pixels at most) and yields in order; an error
raised while preparing a batch is raised when that batch is reached. The pool's threads decode and resize images
(PIL and NumPy release the interpreter lock while they work), so several images are prepared at once; the
tokenizer stays on the caller's thread (fast tokenizers are not safe to share between threads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import torch

from qmamba.data.image import load_image

T = TypeVar("T")
P = TypeVar("P")


def prefetched(batches: Iterable[T], prepare: Callable[[T], P]) -> Iterator[tuple[T, P]]:
    """(batch, prepare(batch)) for each batch in order, the next batch's ``prepare`` running in a background
    thread while the caller works on the current one."""
    with ThreadPoolExecutor(1, thread_name_prefix="qmamba-prefetch") as ahead:
        it = iter(batches)
        current = next(it, None)
        pending = ahead.submit(prepare, current) if current is not None else None
        while current is not None:
            following = next(it, None)
            ready = pending.result()
            pending = ahead.submit(prepare, following) if following is not None else None
            yield current, ready
            current = following


def prepare_images(processor, images: Sequence[Any], pool: Executor | None = None) -> torch.Tensor | None:
    """The pixels (n, 3k, S, S) of a batch's images (paths, PIL images or None; the Nones skipped), each image
    loaded and transformed on ``pool`` when given; None when no image is given."""
    present = [im for im in images if im is not None]
    if not present or processor.transform is None:
        return None
    one = lambda im: processor.transform([load_image(im) if isinstance(im, (str, Path)) else im])  # noqa: E731
    rows = list(pool.map(one, present)) if pool is not None else [one(im) for im in present]  # each (1, 3k, S, S)
    return torch.cat(rows)
