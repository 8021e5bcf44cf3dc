"""The engine's per-bucket decoder (``BucketGraphs``) on CPU: its eager fallback gives the engine's plain answers;
with a stand-in capture (real CUDA graphs cannot run here) each bucket is captured once over its own rows,
replays read the tokens copied into its static buffer, capturing in the middle of a run changes no answer, and
moved weights or another cache are captured again instead of replayed."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from testing_utils import MAMBA1, MAMBA2
from testing_utils import tiny_lm as tiny

from qmamba.infer import Engine, GenerationConfig, Request, generate
from qmamba.infer.bucket_graphs import BucketGraphs, bucket_sizes

LAYERS = pytest.mark.parametrize("ssm_cfg", [MAMBA1, MAMBA2], ids=["m1", "m2"])
# step -> (prompt length, new tokens) of the requests arriving then: the running rows grow and shrink
ARRIVALS = {0: [(5, 9), (1, 4)], 1: [(12, 7)], 3: [(3, 2), (8, 5), (2, 12)], 6: [(4, 6)], 9: [(6, 3)]}


def prompt(length: int, seed: int) -> torch.Tensor:
    return torch.randint(1, 97, (length,), generator=torch.Generator().manual_seed(seed))


def run(model, decode, num_slots: int = 5) -> list[list[int]]:
    """Greedy answers of the ARRIVALS schedule on a new engine with ``decode``."""
    return run_on(Engine(model, num_slots=num_slots, decode=decode))


def run_on(engine: Engine) -> list[list[int]]:
    handles = []
    for step in range(60):
        for length, new in ARRIVALS.get(step, []):
            req = Request(prompt(length, len(handles)), config=GenerationConfig(max_new_tokens=new))
            handles.append(engine.submit(req))
        engine.step()
    assert not engine.has_work and all(h.finish_reason == "length" for h in handles)
    return [h.tokens for h in handles]


class FakeCapture:
    """``Captured`` without CUDA: at capture it runs ``fn`` ``warmup`` times (the warm-up advances the captured
    rows, as on a GPU); each call replays ``fn``, reading the tensors its closure holds, as a graph does."""

    made: ClassVar[list[FakeCapture]] = []

    def __init__(self, fn, use_graph: bool, warmup: int, pool):
        assert use_graph
        self.fn, self.replays = fn, 0
        for _ in range(warmup):
            self.rows = fn().shape[0]
        FakeCapture.made.append(self)

    def __call__(self):
        self.replays += 1
        FakeCapture.last = self
        return self.fn()


@pytest.fixture()
def fake():
    FakeCapture.made = []
    return FakeCapture


def test_bucket_sizes_are_what_the_engine_asks_for():
    assert bucket_sizes(6) == [6, 4, 2, 1]
    assert bucket_sizes(64) == [64, 32, 16, 8, 4, 2, 1]
    assert bucket_sizes(3, (1, 4)) == [3, 1]


@LAYERS
def test_eager_fallback_gives_the_plain_engine_answers(ssm_cfg):
    torch.manual_seed(0)
    model = tiny(ssm_cfg)
    plain = run(model, None)
    assert run(model, BucketGraphs(model, use_graphs=False)) == plain
    assert not BucketGraphs(model).use_graphs  # on CPU: eager by default
    for (length, new), tokens, seed in zip([a for s in sorted(ARRIVALS) for a in ARRIVALS[s]], plain, range(99)):
        ids = prompt(length, seed)
        assert tokens == generate(model, ids[None], max_new_tokens=new)[0, length:].tolist()


@LAYERS
def test_each_bucket_is_captured_once_and_replays_the_tokens_copied_in(ssm_cfg, fake):
    torch.manual_seed(1)
    model = tiny(ssm_cfg)
    plain = run(model, None)
    decoder = BucketGraphs(model, use_graphs=True, capture=fake)
    asked = []

    def decode(tokens, cache):  # the engine's call, and which captured step answered it
        logits = decoder(tokens, cache)
        asked.append((tokens.shape[0], fake.last.rows, logits.shape[0]))
        return logits

    assert run(model, decode) == plain  # buckets captured lazily, while other requests run
    sizes = {b for b, _, _ in asked}
    assert len(sizes) >= 3 and all(b == rows == out for b, rows, out in asked)
    assert sorted(c.rows for c in fake.made) == sorted(sizes)  # once each
    assert sum(c.replays for c in fake.made) == len(asked)


def test_prepare_captures_every_bucket_ahead_and_changes_no_answer(fake):
    torch.manual_seed(2)
    model = tiny(MAMBA1)
    plain = run(model, None)
    decoder = BucketGraphs(model, use_graphs=True, capture=fake)
    engine = Engine(model, num_slots=5, decode=decoder)
    decoder.prepare(engine.cache, engine.num_slots, engine.buckets)
    assert [c.rows for c in fake.made] == [5, 4, 2, 1]
    assert all(float(s.ssm_state.abs().sum()) == 0 for s in engine.cache.layers)  # warm-up steps undone
    assert run_on(engine) == plain and len(fake.made) == 4


def test_moved_weights_and_another_cache_are_captured_again(fake):
    torch.manual_seed(3)
    model = tiny(MAMBA2)
    plain = run(model, None)
    decoder = BucketGraphs(model, use_graphs=True, capture=fake)
    engine = Engine(model, num_slots=5, decode=decoder)
    decoder.prepare(engine.cache, 5)
    decoder.prepare(engine.cache, 5)
    assert len(fake.made) == 4  # captured once
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()  # the same values at new addresses (as .to() moves them)
    assert run_on(engine) == plain
    assert len(fake.made) > 4 and all(c.replays == 0 for c in fake.made[:4])  # the stale graphs never ran
    made = len(fake.made)
    assert run(model, decoder) == plain and len(fake.made) > made  # a new engine: another cache
