"""Batched admission: requests waiting at a step boundary prefill together as one left-padded batch (one call of
``model.prefill`` with a row each), and every request still gets exactly its answer alone: ``generate``'s greedy
tokens, or the tokens its seed draws alone. A bad request in a batch ends alone; the budget splits admissions."""

from __future__ import annotations

from collections import deque

import pytest
import torch
from testing_utils import MAMBA1, MAMBA2, tiny_multimodal
from testing_utils import tiny_lm as tiny

from qmamba.infer import Engine, GenerationConfig, Request, generate
from qmamba.infer.admission import admit_now, prefill_groups, take_waiting
from qmamba.models.splice import IMAGE_TOKEN_ID

LAYERS = pytest.mark.parametrize("ssm_cfg", [MAMBA1, MAMBA2], ids=["m1", "m2"])
SAMPLED = {"do_sample": True, "temperature": 1.3, "top_k": 30, "top_p": 0.9}


def prompt(length: int, seed: int, vocab: int = 97) -> torch.Tensor:
    return torch.randint(1, vocab, (length,), generator=torch.Generator().manual_seed(seed))


def settings(i: int) -> GenerationConfig:
    """Request i's settings: greedy, seeded sampling or a repetition penalty, and its own length."""
    kind = i % 3
    extra = SAMPLED | {"seed": 50 + i} if kind == 1 else {"repetition_penalty": 1.5} if kind == 2 else {}
    return GenerationConfig(max_new_tokens=3 + i % 5, **extra)


def alone(model, ids: torch.Tensor, cfg: GenerationConfig, pixels: torch.Tensor | None = None) -> list[int]:
    """The new tokens ``generate`` gives ``ids`` (l,) as a batch of one."""
    inputs = {} if pixels is None else {"pixel_values": pixels}
    return generate(model, ids[None], **cfg.__dict__, **inputs)[0, ids.shape[0]:].tolist()


def spy_prefill(model) -> list[int]:
    """Record the rows of every ``model.prefill`` call from now on."""
    rows, real = [], model.prefill

    def prefill(input_ids, **kwargs):
        rows.append(input_ids.shape[0])
        return real(input_ids, **kwargs)

    model.prefill = prefill
    return rows


@LAYERS
def test_requests_waiting_together_prefill_as_one_batch_and_answer_as_alone(ssm_cfg):
    torch.manual_seed(0)
    model = tiny(ssm_cfg)
    cases = [(prompt(2 + (7 * i) % 11, seed=i), settings(i)) for i in range(13)]
    want = [alone(model, ids, cfg) for ids, cfg in cases]
    rows = spy_prefill(model)
    engine = Engine(model, num_slots=16)
    arrivals = {0: range(0, 8), 2: range(8, 11), 5: range(11, 13)}  # step -> requests submitted before it
    handles = {}
    for step in range(30):
        for i in arrivals.get(step, []):
            handles[i] = engine.submit(Request(cases[i][0], config=cases[i][1]))
        engine.step()
        if step == 0:  # the lowest slots, in queue order
            assert [handles[i].slot for i in range(8)] == list(range(8))
    assert not engine.has_work
    assert rows == [8, 3, 2]  # one prefill per admission, a row per request
    for i, handle in sorted(handles.items()):
        assert handle.finish_reason == "length"
        assert handle.tokens == want[i], f"request {i} ({cases[i][1]})"


def test_a_bad_request_in_a_batch_ends_alone():
    torch.manual_seed(1)
    model = tiny(MAMBA1)
    cases = [(prompt(3 + i, seed=10 + i), settings(i)) for i in range(5)]
    want = [alone(model, ids, cfg) for ids, cfg in cases]
    rows = spy_prefill(model)
    engine = Engine(model, num_slots=8)
    handles = [engine.submit(Request(ids, config=cfg)) for ids, cfg in cases[:3]]
    bad = engine.submit(Request(torch.tensor([5, 500, 7]), config=GenerationConfig(max_new_tokens=3)))  # past vocab
    handles += [engine.submit(Request(ids, config=cfg)) for ids, cfg in cases[3:]]
    engine.run_until_idle()
    assert rows == [6, 1, 1, 1, 1, 1, 1]  # the batch failed: each request again, alone
    assert bad.finish_reason == "error" and "token ids must lie in" in str(bad.error) and bad.tokens == []
    assert [h.tokens for h in handles] == want
    assert sorted(h.finish_reason for h in handles) == ["length"] * 5


def test_the_budget_splits_admissions_in_queue_order():
    torch.manual_seed(2)
    model = tiny(MAMBA2)
    lengths = [20, 3, 3, 3, 9, 9, 2]
    cases = [(prompt(n, seed=20 + i), GenerationConfig(max_new_tokens=4)) for i, n in enumerate(lengths)]
    want = [alone(model, ids, cfg) for ids, cfg in cases]
    rows = spy_prefill(model)
    engine = Engine(model, num_slots=8, max_prefill_batch=3, max_prefill_tokens=19)
    handles = [engine.submit(Request(ids, config=cfg)) for ids, cfg in cases]
    engine.step()  # the first request alone is past the budget: admitted alone, nothing waits forever
    assert rows == [1] and [h.slot for h in handles[:2]] == [0, None]
    engine.step()  # the three 3s (max_prefill_batch)
    engine.step()  # the two 9s (2 x 9 = 18 padded tokens); the 2 would make 3 x 9 = 27
    engine.run_until_idle()
    assert rows == [1, 3, 2, 1]
    assert [h.tokens for h in handles] == want


def test_admit_now_waits_for_enough_requests_or_enough_steps_since_the_last_admission():
    def now(waiting, free, running, waited, max_batch=64, ratio=0.25, wait=8):
        return admit_now(waiting, free, running, waited, max_batch, ratio, wait)

    assert not now(0, 8, 0, 0) and not now(3, 0, 8, 100)  # nothing waits / no slot is free
    assert now(1, 60, 0, 0)  # nothing runs: at once
    assert not now(1, 4, 60, 7) and now(1, 4, 60, 8)  # 1 < 0.25 x 60 until 8 decode steps since the last one
    assert now(15, 20, 60, 0) and not now(14, 20, 60, 0)  # 15 >= 0.25 x 60 > 14
    assert not now(40, 14, 60, 0)  # only 14 could join (the free slots)
    assert not now(40, 40, 60, 0, max_batch=10)  # only 10 could join (one prefill's rows)
    assert now(1, 4, 60, 0, ratio=0) and now(1, 4, 60, 0, wait=0)  # off: every step admits


def test_a_patient_engine_admits_later_in_fewer_batches_and_answers_the_same():
    torch.manual_seed(3)
    model = tiny(MAMBA1)
    cases = [(prompt(3 + i % 4, seed=30 + i), GenerationConfig(max_new_tokens=12)) for i in range(7)]
    want = [alone(model, ids, cfg) for ids, cfg in cases]
    rows = spy_prefill(model)
    engine = Engine(model, num_slots=8, admit_ratio=0.75, admit_wait_steps=3)
    arrivals = {0: [0, 1, 2, 3], 1: [4], 2: [5], 4: [6]}  # step -> requests submitted before it
    handles, admitted_at = {}, {}
    for step in range(40):
        for i in arrivals.get(step, []):
            handles[i] = engine.submit(Request(cases[i][0], config=cases[i][1]))
        engine.step()
        admitted_at.update({i: step for i, h in handles.items() if h.tokens and i not in admitted_at})
    # nothing ran: 0-3 at once. 4 and 5 (2 < 0.75 x 4 running) join 3 decode steps after that admission (the
    # steps 0, 1, 2); 6 (1 < 0.75 x 6) comes one step after theirs and joins 3 decode steps after it
    assert admitted_at == {0: 0, 1: 0, 2: 0, 3: 0, 4: 3, 5: 3, 6: 6}
    assert rows == [4, 2, 1]
    assert [handles[i].tokens for i in range(7)] == want


def test_a_saturated_patient_engine_gathers_its_admissions_though_its_queue_never_empties():
    torch.manual_seed(4)
    model = tiny(MAMBA2)
    cases = [(prompt(4, seed=70 + i), GenerationConfig(max_new_tokens=3 + i % 6)) for i in range(16)]
    want = [alone(model, ids, cfg) for ids, cfg in cases]
    rows = spy_prefill(model)
    answers, admissions = {}, {}
    for ratio in (0.0, 0.5):  # all queued at once; answers of different lengths free one slot at a time
        rows.clear()
        engine = Engine(model, num_slots=4, admit_ratio=ratio, admit_wait_steps=3)
        handles = [engine.submit(Request(ids, config=cfg)) for ids, cfg in cases]
        engine.run_until_idle()
        answers[ratio], admissions[ratio] = [h.tokens for h in handles], list(rows)
    eager, patient = admissions[0.0], admissions[0.5]
    assert sum(eager) == sum(patient) == 16
    assert eager.count(1) >= 4, eager  # slots freed one by one and refilled at once
    assert len(patient) < len(eager) and min(patient[:-1]) >= 2, patient
    assert answers[0.0] == answers[0.5] == want


def test_admission_takes_what_fits_and_groups_images_by_shape():
    class Handle:
        def __init__(self, ids, pixels=None):
            self.request = Request(torch.tensor(ids), pixels)

    img = IMAGE_TOKEN_ID
    queue = [Handle([1, img, 2], torch.zeros(1, 3, 8, 8)), Handle([4, 5]), Handle([img, img], torch.zeros(2, 3, 8, 8)),
             Handle([img, 6], torch.zeros(1, 3, 4, 4)), Handle([img, 7]), Handle([7, 8, 9])]
    waiting = deque(queue)
    # an image counts as 10 tokens: 12 x 1, then 12 x 2 = 24, then 20 x 3 = 60 > 50
    assert take_waiting(waiting, free=8, max_batch=8, max_tokens=50, visual_tokens=10) == queue[:2]
    assert take_waiting(waiting, free=1, max_batch=8, max_tokens=50, visual_tokens=10) == queue[2:3]
    groups = prefill_groups(queue)
    # 8x8 images with the text-only rows (queue order), the 4x4 image, the placeholder without an image alone
    assert groups == [[queue[0], queue[1], queue[2], queue[5]], [queue[3]], [queue[4]]]


def test_multimodal_requests_with_and_without_images_prefill_together():
    model = tiny_multimodal(4)
    s, k = model.config.vision.image_size, len(model.config.vision.hf_configs)
    vocab = model.config.llm.vocab_size
    cases = []
    for i, (length, columns) in enumerate([(9, [3]), (5, [0]), (4, []), (11, [2, 8]), (7, [6]), (3, [])]):
        ids = prompt(length, seed=40 + i, vocab=vocab)
        ids[columns] = IMAGE_TOKEN_ID
        pixels = torch.randn(len(columns), 3 * k, s, s) if columns else None
        cases.append((ids, pixels, settings(i)))
    want = [alone(model, ids, cfg, pixels) for ids, pixels, cfg in cases]
    rows = spy_prefill(model)
    engine = Engine(model, num_slots=8)
    handles = [engine.submit(Request(ids, pixels, cfg)) for ids, pixels, cfg in cases]
    mismatch = engine.submit(Request(cases[0][0], torch.randn(2, 3 * k, s, s)))  # one placeholder, two images
    engine.run_until_idle()
    assert rows == [6, 1]  # every good request in one prefill; the mismatched one alone
    assert mismatch.finish_reason == "error" and "placeholder" in str(mismatch.error)
    for i, handle in enumerate(handles):
        assert handle.tokens == want[i], f"request {i}"


def test_a_stop_string_late_in_a_long_answer_ends_it_where_generate_does():
    from testing_utils import tiny_tokenizer

    torch.manual_seed(5)
    tok = tiny_tokenizer()
    model = tiny(MAMBA1, vocab_size=len(tok))
    ids = prompt(6, seed=60, vocab=len(tok))
    sampled = {"do_sample": True, "seed": 3, "max_new_tokens": 150}
    free = alone(model, ids, GenerationConfig(**sampled))
    text = tok.decode(free)
    # three tokens whose text first shows up late: far past the engine's window of decoded tokens
    stop = next(tok.decode(free[i:i + 3]) for i in range(60, 147) if text.find(tok.decode(free[i:i + 3])) >
                len(tok.decode(free[:i])) - 2)
    cfg = GenerationConfig(**sampled, stop_strings=[stop])
    want = generate(model, ids[None], tokenizer=tok, **cfg.__dict__)[0, ids.shape[0]:].tolist()
    assert 4 * len(stop) + 8 < len(want) < 150  # the answer outgrows the window before the stop
    engine = Engine(model, num_slots=2, tokenizer=tok)
    handle = engine.submit(Request(ids, config=cfg))
    engine.run_until_idle()
    assert handle.finish_reason == "stop" and handle.tokens == want
