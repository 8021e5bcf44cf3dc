"""The engine-to-loop hand-over: every token reaches its queue in order, a burst of tokens wakes the loop
once, and a closed loop refuses tokens (so the engine cancels the request)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from qmamba.serve.bridge import Outbox


def test_a_burst_from_another_thread_wakes_the_loop_once_and_keeps_order():
    loop = asyncio.new_event_loop()
    wakeups = []
    real = loop.call_soon_threadsafe

    def counting(callback, *args):
        wakeups.append(callback)
        return real(callback, *args)

    loop.call_soon_threadsafe = counting
    try:
        box = Outbox.of(loop)
        assert Outbox.of(loop) is box
        queues = [asyncio.Queue() for _ in range(4)]

        def engine_step():  # the engine's thread: one token for each of 4 rows, 25 steps, while the loop sleeps
            for step in range(25):
                for row, q in enumerate(queues):
                    box.put(q, (row, step))

        thread = threading.Thread(target=engine_step)
        thread.start()
        thread.join()
        assert len(wakeups) == 1  # the loop was not running: the whole burst is one hand-over
        loop.run_until_complete(asyncio.sleep(0))
        for row, q in enumerate(queues):
            assert [q.get_nowait() for _ in range(q.qsize())] == [(row, s) for s in range(25)]
        box.put(queues[0], "next")  # after a hand-over the next event schedules a new one
        loop.run_until_complete(asyncio.sleep(0))
        assert len(wakeups) == 2 and queues[0].get_nowait() == "next"
    finally:
        loop.close()
    with pytest.raises(RuntimeError):
        box.put(queues[0], "late")


def test_tokens_that_arrived_together_come_as_one_batch_and_the_end_after_them():
    from types import SimpleNamespace

    from qmamba.serve.bridge import Generation

    loop = asyncio.new_event_loop()
    try:
        gen = Generation(loop)
        gen.handle = SimpleNamespace(error=None, done=True)

        async def consume():
            return [batch async for batch in gen.token_batches()]

        def engine():  # five tokens before the loop looks, then two more and the end
            for t in range(5):
                gen._on_token(t)

        thread = threading.Thread(target=engine)
        thread.start()
        thread.join()
        task = loop.create_task(consume())
        loop.run_until_complete(asyncio.sleep(0))  # the consumer takes what has arrived
        gen._on_token(5)
        gen._on_token(6)
        gen._on_finish("length")
        batches = loop.run_until_complete(task)
    finally:
        loop.close()
    assert batches == [[0, 1, 2, 3, 4], [5, 6]] and gen.finish_reason == "length"
