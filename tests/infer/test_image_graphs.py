"""The engine's per-bucket image encoder (``BucketEncoder``) on CPU: with a stand-in capture (real CUDA graphs
cannot run here) a bucket is captured once per image shape, its padding rows change no image's tokens, and an
engine that encodes through it gives every request the answer of ``generate`` alone."""

from __future__ import annotations

import torch
from testing_utils import tiny_multimodal

from qmamba.constants import IMAGE_TOKEN_ID
from qmamba.infer import Engine, GenerationConfig, Request, generate
from qmamba.infer.image_graphs import BucketEncoder


class FakeCapture:
    """``Captured`` without CUDA: ``fn`` runs ``warmup`` times at capture and once per replay, reading the static
    input its closure holds, as a graph does."""

    def __init__(self, fn, use_graph: bool, warmup: int, pool):
        assert use_graph
        self.fn, self.replays = fn, 0
        for _ in range(warmup):
            self.rows = fn().shape[0]

    def __call__(self):
        self.replays += 1
        return self.fn()


def images(model, n: int, seed: int) -> torch.Tensor:
    s, k = model.config.vision.image_size, len(model.config.vision.hf_configs)
    return torch.randn(n, 3 * k, s, s, generator=torch.Generator().manual_seed(seed))  # (n, 3k, S, S)


def test_a_bucket_is_captured_once_and_its_padding_rows_change_nothing():
    model = tiny_multimodal(0)
    made = []

    def capture(fn, use_graph, warmup, pool):
        made.append(FakeCapture(fn, use_graph, warmup, pool))
        return made[-1]

    encoder = BucketEncoder(model, use_graphs=True, capture=capture)
    with torch.inference_mode():
        for n, seed in ((3, 1), (4, 2), (3, 3), (5, 4), (1, 5)):
            pixels = images(model, n, seed)
            out = encoder(pixels)  # (n, q, d)
            alone = torch.cat([model.encode_images(pixels[i:i + 1]) for i in range(n)])
            torch.testing.assert_close(out, alone, rtol=1e-5, atol=1e-6)
    assert [c.rows for c in made] == [4, 8, 1]  # buckets 4 (n 3, 4, 3), 8 (n 5), 1 (n 1): once each
    assert [c.replays for c in made] == [3, 1, 1]


def test_an_engine_encoding_through_the_buckets_answers_as_generate_alone():
    model = tiny_multimodal(1)
    vocab = model.config.llm.vocab_size
    cases = []
    for i, (length, column) in enumerate([(9, 3), (5, 0), (7, 6), (11, 2), (6, 5)]):
        ids = torch.randint(1, vocab, (length,), generator=torch.Generator().manual_seed(70 + i))
        ids[column] = IMAGE_TOKEN_ID
        cases.append((ids, images(model, 1, 80 + i)))
    cfg = GenerationConfig(max_new_tokens=6)
    want = [generate(model, ids[None], pixel_values=pixels, max_new_tokens=6)[0, ids.numel():].tolist()
            for ids, pixels in cases]
    encoder = BucketEncoder(model, use_graphs=True, capture=FakeCapture)
    engine = Engine(model, num_slots=4, encode=encoder)
    handles = [engine.submit(Request(ids, pixels, cfg)) for ids, pixels in cases]
    engine.run_until_idle()
    assert [h.tokens for h in handles] == want
    assert sorted(shape[0] for shape in encoder.graphs) == [1, 4]  # the first 4 admitted together, then 1
