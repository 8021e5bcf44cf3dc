"""Images off the critical path: the next batch is prepared while the caller works on the current one, in order,
an error surfaces at its own batch, and preprocessed pixels equal the processor's own."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from PIL import Image
from testing_utils import tiny_tokenizer

from qmamba.data.image import MultiImageTransform
from qmamba.data.prefetch import prefetched, prepare_images
from qmamba.data.processor import Processor
from qmamba.errors import InputError
from qmamba.models.presets import get_preset


def test_the_next_batch_is_prepared_while_the_current_one_is_used():
    second_started = threading.Event()

    def prepare(batch):
        if batch == "b":
            second_started.set()
        return batch.upper()

    seen = []
    for batch, ready in prefetched(["a", "b", "c"], prepare):
        if batch == "a":  # batch b's preparation runs while the caller still holds batch a
            assert second_started.wait(timeout=10), "the next batch was not prepared ahead"
        seen.append((batch, ready))
    assert seen == [("a", "A"), ("b", "B"), ("c", "C")]
    assert list(prefetched([], prepare)) == []


def test_an_error_while_preparing_comes_with_its_own_batch():
    def prepare(batch):
        if batch == 2:
            raise ValueError("bad image in batch 2")
        return batch

    got = []
    with pytest.raises(ValueError, match="batch 2"):
        for _batch, ready in prefetched([1, 2, 3], prepare):
            got.append(ready)
    assert got == [1]


@pytest.fixture()
def processor():
    transforms = get_preset("tiny-cobra").vision.transforms  # two towers: 6 channels
    return Processor(tiny_tokenizer(), MultiImageTransform(transforms))


def test_prepared_pixels_equal_the_processors_own(processor, tmp_path):
    images = [Image.new("RGB", (40, 30), (200, 30, 30)), None, tmp_path / "blue.png"]
    Image.new("RGB", (20, 50), (30, 30, 220)).save(images[2])
    prompts = ["what colour ?", "how many ?", "what colour ?"]
    own = processor(prompts, images)["pixel_values"]  # (2, 6, S, S)
    with ThreadPoolExecutor(2) as pool:
        pixels = prepare_images(processor, images, pool)
    assert torch.equal(pixels, own) and torch.equal(prepare_images(processor, images), own)
    batch = processor(prompts, images, pixel_values=pixels)
    assert torch.equal(batch["pixel_values"], own)
    assert prepare_images(processor, [None, None]) is None
    with pytest.raises(InputError, match="1 preprocessed images for 2 images"):
        processor(prompts, images, pixel_values=pixels[:1])
