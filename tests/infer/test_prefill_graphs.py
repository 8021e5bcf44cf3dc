"""The engine's per-bucket LM prefill (``BucketPrefill``) on CPU: with a stand-in capture (real CUDA graphs cannot
run here) every admission's prefill replays a (batch bucket, length bucket) graph over left-padded static inputs,
and every request still gets the answer of ``generate`` alone, for Mamba-1, Mamba-2 and a multimodal model."""

from __future__ import annotations

import pytest
import torch
from testing_utils import MAMBA1, MAMBA2, tiny_multimodal
from testing_utils import tiny_lm as tiny

from qmamba.constants import IMAGE_TOKEN_ID
from qmamba.infer import Engine, GenerationConfig, Request, generate
from qmamba.infer.image_graphs import BucketEncoder
from qmamba.infer.prefill_graphs import BucketPrefill

# step -> (prompt length, new tokens) of the requests arriving then
ARRIVALS = {0: [(5, 6), (1, 4), (13, 5)], 1: [(12, 7)], 3: [(3, 2), (8, 5), (2, 9)], 6: [(4, 6)]}


class FakeCapture:
    """``Captured`` without CUDA: ``fn`` runs ``warmup`` times at capture and once per replay."""

    def __init__(self, fn, use_graph: bool, warmup: int, pool):
        assert use_graph
        self.fn, self.replays = fn, 0
        for _ in range(warmup):
            fn()

    def __call__(self):
        self.replays += 1
        return self.fn()


def prompt(length: int, seed: int, vocab: int = 97) -> torch.Tensor:
    return torch.randint(1, vocab, (length,), generator=torch.Generator().manual_seed(seed))


def run(engine: Engine, requests: dict) -> list[list[int]]:
    handles = []
    for step in range(80):
        for ids, pixels, new in requests.get(step, []):
            handles.append(engine.submit(Request(ids, pixels, GenerationConfig(max_new_tokens=new))))
        engine.step()
    assert not engine.has_work
    return [h.tokens for h in handles]


@pytest.mark.parametrize("ssm_cfg", [MAMBA1, MAMBA2], ids=["m1", "m2"])
def test_language_model_admissions_replay_buckets_and_answer_as_generate(ssm_cfg):
    torch.manual_seed(0)
    model = tiny(ssm_cfg)
    requests = {step: [(prompt(length, 10 * step + i), None, new) for i, (length, new) in enumerate(arrivals)]
                for step, arrivals in ARRIVALS.items()}
    want = [generate(model, ids[None], max_new_tokens=new)[0, ids.numel():].tolist()
            for step in sorted(requests) for ids, _, new in requests[step]]
    prefill = BucketPrefill(model, use_graphs=True, capture=FakeCapture, length_multiple=8)
    assert run(Engine(model, num_slots=8, prefill=prefill), requests) == want
    # admissions of 3, 1, 3 and 1 requests, the longest 13, 12, 8 and 4 tokens: one graph each
    assert sorted(shape[:2] for shape in prefill.graphs) == [(1, 8), (1, 16), (4, 8), (4, 16)]
    assert sorted(prefill.caches) == [1, 4]
    capped = BucketPrefill(model, use_graphs=True, capture=FakeCapture, length_multiple=8, max_graphs=2)
    assert run(Engine(model, num_slots=8, prefill=capped), requests) == want  # past two shapes: eager
    assert len(capped.graphs) == 2


def test_multimodal_admissions_with_graphed_encoding_answer_as_generate():
    model = tiny_multimodal(1)
    s, k = model.config.vision.image_size, len(model.config.vision.hf_configs)
    vocab = model.config.llm.vocab_size
    requests, want = {}, []
    for i, (step, length, column) in enumerate([(0, 9, 3), (0, 5, 0), (0, 7, None), (2, 11, 2), (2, 6, 5)]):
        ids = prompt(length, 70 + i, vocab)
        pixels = None
        if column is not None:
            ids[column] = IMAGE_TOKEN_ID
            pixels = torch.randn(1, 3 * k, s, s, generator=torch.Generator().manual_seed(80 + i))
        requests.setdefault(step, []).append((ids, pixels, 5))
        want.append(generate(model, ids[None], pixel_values=pixels, max_new_tokens=5)[0, length:].tolist())
    encode = BucketEncoder(model, use_graphs=True, capture=FakeCapture)
    prefill = BucketPrefill(model, use_graphs=True, capture=FakeCapture, length_multiple=16)
    assert run(Engine(model, num_slots=8, encode=encode, prefill=prefill), requests) == want
    assert prefill.graphs and encode.graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.gpu
@pytest.mark.parametrize("ssm_cfg", [MAMBA1, MAMBA2], ids=["m1", "m2"])
def test_graphed_admissions_answer_as_eager_ones_on_gpu(ssm_cfg):
    cfg = {**ssm_cfg, "d_state": 16, **({"headdim": 64, "chunk_size": 64} if ssm_cfg["layer"] == "Mamba2" else {})}
    torch.manual_seed(2)
    model = tiny(cfg, device="cuda", d_model=256, n_layer=4)
    requests = {step: [(prompt(length * 7, 10 * step + i).cuda(), None, new) for i, (length, new) in
                       enumerate(arrivals)] for step, arrivals in ARRIVALS.items()}
    prefill = BucketPrefill(model)
    assert prefill.use_graphs
    assert run(Engine(model, num_slots=8, prefill=prefill), requests) == run(Engine(model, num_slots=8), requests)
    assert len(prefill.graphs) == 4


def test_a_failed_capture_runs_that_shape_eagerly_with_a_warning(caplog):
    model = tiny_multimodal(3)
    vocab = model.config.llm.vocab_size
    s, k = model.config.vision.image_size, len(model.config.vision.hf_configs)
    ids = prompt(7, 90, vocab)
    ids[2] = IMAGE_TOKEN_ID
    pixels = torch.randn(1, 3 * k, s, s, generator=torch.Generator().manual_seed(91))
    want = generate(model, ids[None], pixel_values=pixels, max_new_tokens=4)[0, 7:].tolist()

    def failing(fn, use_graph, warmup, pool):
        raise RuntimeError("operation not permitted when stream is capturing")

    encode = BucketEncoder(model, use_graphs=True, capture=failing)
    prefill = BucketPrefill(model, use_graphs=True, capture=failing)
    with caplog.at_level("WARNING", logger="qmamba"):
        for _ in range(2):  # the second time, the failed shapes are not tried again
            assert run(Engine(model, num_slots=2, encode=encode, prefill=prefill), {0: [(ids, pixels, 4)]}) == [want]
    assert not encode.graphs and not prefill.graphs and encode.failed and prefill.failed
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("could not be captured" in w for w in warnings) == 2, warnings
