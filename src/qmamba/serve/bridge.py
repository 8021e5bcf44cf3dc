"""From the engine's thread to the server's event loop: one submitted request as an async token stream.

    gen = Generation.submit(engine, Request(ids, pixels, config, timeout), loop)   # QueueFull when the queue is full
    async for token in gen.tokens(): ...        # each token as the engine chooses it
    async for batch in gen.token_batches(): ... # or every token that has arrived since the last batch
    gen.finish_reason                           # 'eos', 'stop', 'length', 'cancelled', 'deadline', 'error'
    gen.cancel()                                # a client went away: its slot frees at once (or at the step's end)

The engine calls ``on_token`` and ``on_finish`` on its own thread; they only hand the event to the loop
through its ``Outbox``, in order, so the loop sees every token before the end. When the loop is gone (the
server stopping), ``on_token`` raises and the engine cancels the request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import ClassVar

from qmamba.infer import Engine, Request


@dataclass(frozen=True)
class _Finished:
    reason: str


class Outbox:
    """Events from other threads to one event loop's queues, handed over in batches: the first event after a
    hand-over schedules the next one (one wake-up of the loop), later events join it. A decode step of 64 rows
    then wakes the loop once instead of 64 times. Order is kept (one FIFO for every queue)."""

    _of_loop: ClassVar[weakref.WeakKeyDictionary] = weakref.WeakKeyDictionary()
    _of_loop_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = weakref.ref(loop)  # the registry's key: a strong reference here would keep it forever
        self._items: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Outbox:
        """The loop's one outbox."""
        with cls._of_loop_lock:
            box = cls._of_loop.get(loop)
            if box is None:
                box = cls._of_loop[loop] = cls(loop)
            return box

    def put(self, queue: asyncio.Queue, item) -> None:
        """Deliver ``item`` to ``queue`` on the loop; raises RuntimeError when the loop is closed."""
        loop = self._loop()
        if loop is None or loop.is_closed():
            raise RuntimeError("the event loop is closed")
        with self._lock:
            self._items.append((queue, item))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:
            with self._lock:
                self._scheduled = False
            raise

    def _deliver(self) -> None:
        with self._lock:
            items, self._items = self._items, collections.deque()
            self._scheduled = False
        for queue, item in items:
            queue.put_nowait(item)


class Generation:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._outbox = Outbox.of(loop)
        self._events: asyncio.Queue = asyncio.Queue()
        self.handle = None
        self.first_token_at: float | None = None  # time.monotonic() of the first token (on the engine's thread)
        self.finish_reason: str | None = None
        self.error: BaseException | None = None

    @classmethod
    def submit(cls, engine: Engine, request: Request, loop: asyncio.AbstractEventLoop) -> Generation:
        """Queue ``request`` (its callbacks replaced by this bridge's) on ``engine``; raises ``QueueFull``."""
        gen = cls(loop)
        gen.handle = engine.submit(replace(request, on_token=gen._on_token, on_finish=gen._on_finish))
        return gen

    async def tokens(self) -> AsyncIterator[int]:
        """The request's tokens as they come; ends when the request ends (``finish_reason`` is then set)."""
        async for batch in self.token_batches():
            for token in batch:
                yield token

    async def token_batches(self) -> AsyncIterator[list[int]]:
        """The tokens that have arrived since the last batch (at least one each): when the loop falls behind
        the engine, a batch holds several, so a busy server sends fewer, larger stream chunks."""
        finished = False
        while not finished:
            batch = []
            item = await self._events.get()
            while True:
                if isinstance(item, _Finished):
                    self.finish_reason, self.error, finished = item.reason, self.handle.error, True
                    break
                batch.append(item)
                if self._events.empty():
                    break
                item = self._events.get_nowait()
            if batch:
                yield batch

    def cancel(self) -> None:
        """End the request (no-op once it ended); its slot is free at once unless a step is running."""
        if self.handle is not None and not self.handle.done:
            self.handle.cancel()

    # ------------------------------------------------------------------ the engine's thread
    def _on_token(self, token: int) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self._outbox.put(self._events, token)

    def _on_finish(self, reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits for this request any more
            self._outbox.put(self._events, _Finished(reason))
