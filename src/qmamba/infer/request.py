"""One generation request of the continuous-batching engine, and the handle its caller keeps.

    handle = engine.submit(Request(input_ids, pixel_values=pixels, config=GenerationConfig(max_new_tokens=64)))
    for token_id in handle: ...          # streamed as the engine steps (from another thread than the one stepping)
    handle.cancel()                      # frees its slot at the engine's next chance
    handle.tokens, handle.finish_reason  # every new token id; 'eos', 'stop', 'length', 'cancelled', 'deadline', 'error'

A request carries its own settings (``GenerationConfig``: greedy or sampled, temperature / top-k / top-p / seed,
eos ids, stop strings, max_new_tokens) and its own random generator, so requests that share a decode batch never
share randomness: a seeded request draws the same tokens whatever else runs beside it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from qmamba.errors import InputError, QMambaError
from qmamba.infer.loop import GenerationConfig

FINISH_REASONS = ("eos", "stop", "length", "cancelled", "deadline", "error")


class QueueFull(QMambaError):
    """The engine's queue of waiting requests is full: retry later (a server answers 429)."""


@dataclass
class Request:
    """What to generate from.

    input_ids:    (l,) or (1, l) prompt ids; image placeholders (negative ids) stand where ``pixel_values`` go
    pixel_values: (n_images, 3k, S, S) or None, passed to the model's ``prefill``
    config:       the generation settings of this request alone
    timeout:      seconds from ``submit`` after which the request ends with 'deadline' (None: no deadline)
    on_token:     called with each new token id as it is chosen (on the thread that steps the engine); if it
                  raises, the request is cancelled (e.g. a client that went away)
    on_finish:    called once with the finish reason when the request ends, on whichever thread ended it (a
                  server wakes its event loop here); it must not raise
    """

    input_ids: Tensor
    pixel_values: Tensor | None = None
    config: GenerationConfig = field(default_factory=GenerationConfig)
    timeout: float | None = None
    on_token: Callable[[int], None] | None = None
    on_finish: Callable[[str], None] | None = None

    def __post_init__(self):
        ids = torch.as_tensor(self.input_ids, dtype=torch.long)
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1 or ids.numel() == 0:
            raise InputError(f"a request's input_ids must be one non-empty row (l,) or (1, l), "
                             f"got shape {tuple(self.input_ids.shape)}")
        self.input_ids = ids  # (l,)
        if self.pixel_values is not None and self.pixel_values.dim() != 4:
            raise InputError(f"pixel_values must be (n_images, 3k, S, S), got shape {tuple(self.pixel_values.shape)}")
        if self.timeout is not None and self.timeout <= 0:
            raise InputError(f"timeout must be > 0 seconds, got {self.timeout}")


_END = object()  # the stream's last event


class RequestHandle:
    """A submitted request as its caller sees it: the tokens so far, whether and why it ended, a token stream.

    Written only by the engine (under its lock); read from any thread. ``slot`` is the row of the engine's state
    the request decodes in while it runs (None while queued or after it ended)."""

    def __init__(self, request_id: int, request: Request, deadline: float | None, engine):
        self.id, self.request, self.deadline = request_id, request, deadline
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.slot: int | None = None
        self.cancel_requested = False
        self._engine = engine
        self._events: queue.Queue = queue.Queue()
        self._done = threading.Event()
        self.seen: Tensor | None = None  # (1, v) bool: prompt and generated ids; only with a repetition penalty
        self.generator: torch.Generator | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """End this request ('cancelled' unless it already ended); its slot is freed at once when the engine is
        not mid-step, else at its next step boundary."""
        self._engine.cancel(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request ended (True) or ``timeout`` seconds passed (False)."""
        return self._done.wait(timeout)

    def __iter__(self) -> Iterator[int]:
        """The new token ids as they come; ends when the request ends. Blocks between tokens, so iterate on
        another thread than the one calling ``engine.step()`` (or after the engine ran the request)."""
        while True:
            item = self._events.get()
            if item is _END:
                return
            yield item

    # ------------------------------------------------------------------ the engine's side
    def emit(self, token: int) -> None:
        self.tokens.append(token)
        self._events.put(token)
        if self.request.on_token is not None:
            self.request.on_token(token)

    def finish(self, reason: str, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.finish_reason, self.error, self.slot = reason, error, None
        self._events.put(_END)
        self._done.set()
        if self.request.on_finish is not None:
            self.request.on_finish(reason)
