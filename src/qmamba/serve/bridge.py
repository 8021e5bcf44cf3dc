"""From the engine's thread to the server's event loop: one submitted request as an async token stream.

    gen = Generation.submit(engine, Request(ids, pixels, config, timeout), loop)   # QueueFull when the queue is full
    async for token in gen.tokens(): ...        # each token as the engine chooses it
    gen.finish_reason                           # 'eos', 'stop', 'length', 'cancelled', 'deadline', 'error'
    gen.cancel()                                # a client went away: its slot frees at once (or at the step's end)

The engine calls ``on_token`` and ``on_finish`` on its own thread; they only hand the event to the loop
(``loop.call_soon_threadsafe``), in order, so the loop sees every token before the end. When the loop is gone
(the server stopping), ``on_token`` raises and the engine cancels the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from qmamba.infer import Engine, Request


@dataclass(frozen=True)
class _Finished:
    reason: str


class Generation:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
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
        while True:
            item = await self._events.get()
            if isinstance(item, _Finished):
                self.finish_reason, self.error = item.reason, self.handle.error
                return
            yield item

    def cancel(self) -> None:
        """End the request (no-op once it ended); its slot is free at once unless a step is running."""
        if self.handle is not None and not self.handle.done:
            self.handle.cancel()

    # ------------------------------------------------------------------ the engine's thread
    def _on_token(self, token: int) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self._loop.call_soon_threadsafe(self._events.put_nowait, token)

    def _on_finish(self, reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits for this request any more
            self._loop.call_soon_threadsafe(self._events.put_nowait, _Finished(reason))
