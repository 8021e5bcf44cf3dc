"""The continuous-batching engine: requests that join and leave one decode batch at different steps get exactly
the greedy answer of ``generate`` alone; cancelled and expired requests free their slots for the next; the queue
is bounded; seeded sampling does not depend on what runs beside it; a multimodal request equals its generate."""

from __future__ import annotations

import threading

import pytest
import torch
from testing_utils import MAMBA1, MAMBA2, tiny_multimodal
from testing_utils import tiny_lm as tiny

from qmamba.infer import Engine, GenerationConfig, QueueFull, Request, generate
from qmamba.models.splice import IMAGE_TOKEN_ID

LAYERS = pytest.mark.parametrize("ssm_cfg", [MAMBA1, MAMBA2], ids=["m1", "m2"])


def prompt(length: int, seed: int, vocab: int = 97) -> torch.Tensor:
    return torch.randint(1, vocab, (length,), generator=torch.Generator().manual_seed(seed))


def alone(model, ids: torch.Tensor, **settings) -> list[int]:
    """The new tokens ``generate`` gives ``ids`` (l,) as a batch of one."""
    return generate(model, ids[None], **settings)[0, ids.shape[0]:].tolist()


@LAYERS
def test_requests_arriving_at_different_steps_get_their_greedy_answer_alone(ssm_cfg):
    torch.manual_seed(0)
    model = tiny(ssm_cfg)
    engine = Engine(model, num_slots=3)
    arrivals = {0: [(5, 9), (1, 4)], 2: [(12, 7)], 3: [(3, 2), (8, 5)], 6: [(2, 11)]}  # step -> (length, new)
    handles = []
    for step in range(40):
        for length, new in arrivals.get(step, []):
            ids = prompt(length, seed=len(handles))
            req = Request(ids, config=GenerationConfig(max_new_tokens=new))
            handles.append((engine.submit(req), ids, new))
        engine.step()
        assert engine.num_running <= 3
    assert not engine.has_work
    for handle, ids, new in handles:
        assert handle.finish_reason == "length"
        assert handle.tokens == alone(model, ids, max_new_tokens=new), f"request {handle.id}"
        assert list(handle) == handle.tokens  # the stream saw the same tokens


def test_eos_frees_the_slot_and_streams_through_the_callback():
    torch.manual_seed(1)
    model = tiny(MAMBA1)
    ids = prompt(6, seed=3)
    full = alone(model, ids, max_new_tokens=8)
    eos = full[2]  # the third token ends the request
    seen = []
    engine = Engine(model, num_slots=1)
    handle = engine.submit(Request(ids, config=GenerationConfig(max_new_tokens=8, eos_token_id=eos),
                                   on_token=seen.append))
    engine.run_until_idle()
    cut = full[:full.index(eos) + 1]
    assert handle.finish_reason == "eos" and handle.tokens == cut == seen
    assert engine.slots == [None]


def test_cancelled_request_frees_its_slot_for_the_next():
    torch.manual_seed(2)
    model = tiny(MAMBA2)
    engine = Engine(model, num_slots=1, max_queue=4)
    first = engine.submit(Request(prompt(5, 0), config=GenerationConfig(max_new_tokens=50)))
    ids = prompt(7, 1)
    second = engine.submit(Request(ids, config=GenerationConfig(max_new_tokens=6)))
    queued = engine.submit(Request(prompt(3, 2), config=GenerationConfig(max_new_tokens=6)))
    for _ in range(3):
        engine.step()
    assert first.slot == 0 and second.slot is None and len(first.tokens) == 4
    queued.cancel()  # queued: leaves the queue at once
    first.cancel()  # running: its slot is free at once
    assert queued.finish_reason == first.finish_reason == "cancelled" and engine.slots == [None]
    engine.step()
    assert second.slot == 0
    engine.run_until_idle()
    assert second.tokens == alone(model, ids, max_new_tokens=6) and queued.tokens == []


def test_queue_full_and_deadline():
    model = tiny(MAMBA1)
    now = [0.0]
    engine = Engine(model, num_slots=1, max_queue=2, clock=lambda: now[0])
    running = engine.submit(Request(prompt(4, 0), config=GenerationConfig(max_new_tokens=30), timeout=2.5))
    engine.step()
    waiting = [engine.submit(Request(prompt(4, i), timeout=1.0)) for i in (1, 2)]
    with pytest.raises(QueueFull, match="2 requests are waiting"):
        engine.submit(Request(prompt(4, 3)))
    now[0] = 1.0  # the waiting two expire; the running one goes on
    engine.step()
    assert [h.finish_reason for h in waiting] == ["deadline", "deadline"] and not running.done
    now[0] = 3.0
    engine.step()
    assert running.finish_reason == "deadline" and 0 < len(running.tokens) < 30 and not engine.has_work


@LAYERS
def test_seeded_sampling_does_not_depend_on_the_batch(ssm_cfg):
    torch.manual_seed(3)
    model = tiny(ssm_cfg)
    sampled = GenerationConfig(max_new_tokens=10, do_sample=True, temperature=1.5, top_k=20, top_p=0.9, seed=7)
    ids = prompt(6, 0)

    def run(neighbours: int) -> list[int]:
        engine = Engine(model, num_slots=4)
        for i in range(neighbours):  # other sampled requests beside it, with their own seeds
            cfg = GenerationConfig(max_new_tokens=10, do_sample=True, seed=100 + i)
            engine.submit(Request(prompt(3 + i, 10 + i), config=cfg))
        handle = engine.submit(Request(ids, config=sampled))
        engine.run_until_idle()
        return handle.tokens

    tokens = run(0)
    assert tokens == run(3) == alone(model, ids, **sampled.__dict__)


def test_multimodal_request_equals_its_generate():
    model = tiny_multimodal(4)
    s, k = model.config.vision.image_size, len(model.config.vision.hf_configs)
    engine = Engine(model, num_slots=2)
    cases = []
    for i, (length, column) in enumerate([(9, 3), (5, 0), (7, 6)]):
        ids = torch.randint(0, model.config.llm.vocab_size, (length,))
        ids[column] = IMAGE_TOKEN_ID
        pixels = torch.randn(1, 3 * k, s, s)
        cases.append((engine.submit(Request(ids, pixels, GenerationConfig(max_new_tokens=5 + i))), ids, pixels))
        engine.step()
    cases.append((engine.submit(Request(prompt(4, 9), config=GenerationConfig(max_new_tokens=4))), prompt(4, 9),
                  None))  # a text-only request beside them
    engine.run_until_idle()
    for handle, ids, pixels in cases:
        want = generate(model, ids[None], pixel_values=pixels, max_new_tokens=handle.request.config.max_new_tokens)
        assert handle.tokens == want[0, ids.shape[0]:].tolist(), f"request {handle.id}"


def test_background_thread_streams_and_bad_requests_end_alone():
    model = tiny(MAMBA1)
    engine = Engine(model, num_slots=2)
    engine.start()
    try:
        bad = engine.submit(Request(torch.tensor([500]), config=GenerationConfig(max_new_tokens=3)))  # past vocab
        ids = prompt(5, 1)
        good = engine.submit(Request(ids, config=GenerationConfig(max_new_tokens=6)))
        got = []
        reader = threading.Thread(target=lambda: got.extend(good))
        reader.start()
        reader.join(60)
        assert good.wait(60) and bad.wait(60)
    finally:
        engine.stop(60)
    assert bad.finish_reason == "error" and bad.error is not None
    assert got == good.tokens == alone(model, ids, max_new_tokens=6)


def test_decode_seam_sees_bucketed_slot_rows_and_a_failing_step_ends_only_its_batch():
    model = tiny(MAMBA1)
    rows, fail = [], [False]

    def decode(tokens, cache):  # where a CUDA-graph decoder plugs in: the first B slots, B a bucket
        rows.append((tokens.shape[0], cache.batch_size))
        if fail[0]:
            raise RuntimeError("device lost")
        return model.step(tokens, cache)

    engine = Engine(model, num_slots=6, decode=decode)
    handles = [engine.submit(Request(prompt(3, i), config=GenerationConfig(max_new_tokens=4))) for i in range(3)]
    engine.step()
    handles[1].cancel()
    engine.step()  # slots 0 and 2 run: rows 0..3
    assert rows == [(4, 4), (4, 4)]
    fail[0] = True
    with pytest.raises(RuntimeError, match="device lost"):
        engine.step()
    assert [h.finish_reason for h in handles] == ["error", "cancelled", "error"] and not engine.has_work
    fail[0] = False
    ids = prompt(5, 7)
    after = engine.submit(Request(ids, config=GenerationConfig(max_new_tokens=3)))
    engine.run_until_idle()
    assert after.tokens == alone(model, ids, max_new_tokens=3) and rows[-1] == (1, 1)


def test_concurrent_clients_on_the_background_thread_get_their_answers_alone():
    torch.manual_seed(5)
    model = tiny(MAMBA2)
    engine = Engine(model, num_slots=3, max_queue=16)
    cases = [(prompt(2 + i % 5, 20 + i), 3 + i % 4) for i in range(10)]
    got: dict[int, list[int]] = {}

    def client(i: int) -> None:
        ids, new = cases[i]
        handle = engine.submit(Request(ids, config=GenerationConfig(max_new_tokens=new)))
        got[i] = list(handle)  # streamed while the engine steps on its own thread

    def leaver() -> None:  # a client that goes away after two tokens
        handle = engine.submit(Request(prompt(4, 99), config=GenerationConfig(max_new_tokens=100)))
        for n, _ in enumerate(handle, 1):
            if n == 2:
                handle.cancel()
        got[-1] = handle.finish_reason

    engine.start()
    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(cases))]
        threads.append(threading.Thread(target=leaver))
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        engine.stop(60)
    assert got.pop(-1) == "cancelled"
    assert got == {i: alone(model, ids, max_new_tokens=new) for i, (ids, new) in enumerate(cases)}
    assert not engine.has_work


def test_stats_count_admissions_and_decode_steps():
    torch.manual_seed(9)
    model = tiny(MAMBA1)
    engine = Engine(model, num_slots=4)
    before = engine.stats
    cfg = GenerationConfig(max_new_tokens=4)
    handles = [engine.submit(Request(torch.randint(1, 97, (5 + i,)), config=cfg)) for i in range(3)]
    engine.run_until_idle()
    late = engine.submit(Request(torch.randint(1, 97, (3,)), config=GenerationConfig(max_new_tokens=2)))
    engine.run_until_idle()
    done = engine.stats.since(before)
    assert all(len(h.tokens) == 4 for h in handles) and len(late.tokens) == 2
    # one admission of 3, 3 decode steps of 3 rows; then one admission of 1 and one step of 1 row
    assert (done.admissions, done.admitted, done.decode_steps, done.decoded_rows) == (2, 4, 4, 10)
    assert done.admit_seconds > 0 and done.decode_seconds > 0 and before.admissions == 0
