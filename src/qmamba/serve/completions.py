"""One chat completion from a running ``Generation``: OpenAI's response object, or its server-sent events.

    answer = Answer(service, gen, chat, prepared, received)
    await complete(answer, is_disconnected)     # {"object": "chat.completion", "choices": [...], "usage": ...}
    async for event in sse(answer): ...         # "data: {chunk}\\n\\n" ... "data: [DONE]\\n\\n"

The text is ``detok.TextStream``'s, so the streamed pieces joined equal the non-streamed answer, which equals
``Pipeline.chat``'s. ``finish_reason``: 'stop' (the end-of-turn token or marker, or one of the request's stop
strings), 'length' (max_tokens). A request past its deadline is a 408 (an error event when streaming); a client
that goes away cancels its request, which frees its slot.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from qmamba.serve.bridge import Generation
from qmamba.serve.detok import TextStream
from qmamba.serve.errors import APIError
from qmamba.serve.schema import ChatRequest


class Answer:
    """A request's answer as text pieces, with its finish reason and token counts once it ended."""

    def __init__(self, service, gen: Generation, chat: ChatRequest, prepared, received: float):
        self.service, self.gen, self.chat, self.received = service, gen, chat, received
        self.prompt_tokens, self.completion_tokens = prepared.prompt_tokens, 0
        self.text = TextStream(service.pipe.processor.tokenizer, service.stops(chat))
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.outcome = "cancelled"  # until it ends otherwise (a client that went away)

    @property
    def finish_reason(self) -> str:
        return "stop" if self.text.stopped or self.gen.finish_reason in ("eos", "stop") else "length"

    async def pieces(self) -> AsyncIterator[str]:
        """Text pieces as they can be shown; raises APIError when the request ends without an answer."""
        try:
            async for batch in self.gen.token_batches():  # one piece per batch: fewer chunks when busy
                piece = ""
                for token in batch:
                    self.completion_tokens += 1
                    piece += self.text.push(token)
                    if self.text.stopped:  # a stop string the engine's check has not ended the request on
                        break
                if piece:
                    yield piece
                if self.text.stopped:
                    break
            self._check_ended()
            rest = self.text.finish()
            if rest:
                yield rest
            self.outcome = self.finish_reason
        finally:
            self.gen.cancel()  # no-op when it ended; else the client went away: its slot frees now
            self._record()

    def _check_ended(self) -> None:
        reason = self.gen.finish_reason
        if self.text.stopped or reason in ("eos", "stop", "length"):
            return
        self.outcome = reason or "cancelled"
        if reason == "deadline":
            raise APIError(408, f"the request ran past this server's deadline of {self.service.config.timeout:g} "
                                f"s (--timeout) after {self.completion_tokens} tokens; ask for fewer tokens "
                                f"(max_tokens) or retry when the server is less busy", None, "deadline_exceeded")
        if reason == "error":
            raise APIError(500, f"generation failed: {type(self.gen.error).__name__}: {self.gen.error}", None,
                           "generation_failed")
        raise APIError(503, "the request was cancelled: the server is stopping", None, "cancelled")

    def _record(self) -> None:
        ttft = self.gen.first_token_at - self.received if self.gen.first_token_at is not None else None
        self.service.metrics.finished(self.outcome, self.prompt_tokens, self.completion_tokens, ttft,
                                      time.monotonic() - self.received)

    @property
    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.service.name, "choices": [choice]}
        return {**out, "usage": None} if self.chat.include_usage else out


async def complete(answer: Answer, disconnected: Callable[[], Awaitable[None]]) -> dict | None:
    """The whole answer as a ``chat.completion`` object; None if ``disconnected()`` returns first (the client
    went away: the request is cancelled)."""

    async def collect() -> str:
        return "".join([piece async for piece in answer.pieces()])

    work, gone = asyncio.ensure_future(collect()), asyncio.ensure_future(disconnected())
    await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    if not work.done():
        work.cancel()  # its pieces() cancels the request
        await asyncio.gather(work, return_exceptions=True)
        return None
    gone.cancel()
    message = {"role": "assistant", "content": work.result()}
    return {"id": answer.id, "object": "chat.completion", "created": answer.created, "model": answer.service.name,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}],
            "usage": answer.usage}


async def sse(answer: Answer) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, content chunks, a finish chunk, a usage chunk (``include_usage``), and
    ``[DONE]``; an error after the stream began is an ``{"error": ...}`` event before ``[DONE]``."""
    yield _event(answer.chunk({"role": "assistant", "content": ""}))
    try:
        async for piece in answer.pieces():
            yield _event(answer.chunk({"content": piece}))
    except APIError as e:
        yield _event(e.body())
        yield "data: [DONE]\n\n"
        return
    yield _event(answer.chunk({}, answer.finish_reason))
    if answer.chat.include_usage:
        yield _event({**answer.chunk({}), "choices": [], "usage": answer.usage})
    yield "data: [DONE]\n\n"


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
