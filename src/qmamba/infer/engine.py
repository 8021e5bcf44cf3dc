"""Continuous batching over fixed-size Mamba states: requests join and leave one running decode batch.

A Mamba sequence's whole past is a fixed-size state, so requests that arrive at different times can share a
decode batch without a paged cache. The engine holds ``num_slots`` rows of one cache, allocated once:

    slots      cache = model.allocate_inference_cache(num_slots): conv (S, conv_dim, d_conv), ssm (S, ...) per layer
    tokens     (S,) each slot's next input token (0 in a free slot)
    queue      waiting requests, at most ``max_queue`` (``submit`` raises ``QueueFull`` past it)

    engine.step():
        1. end cancelled and expired requests (queued or running): their slots are free again
        2. admit waiting requests into free slots (lowest first, in queue order), now or, with ``admit_ratio``,
           once enough wait (``infer.admission.admit_now``), as many as fit the free slots,
           ``max_prefill_batch`` and ``max_prefill_tokens`` (``infer.admission``): their prompts, left-padded to
           the longest, and their images run ONE prefill (vision encoder, connector, LM prefill) into a fresh
           cache of b rows, written into their slots at once (``cache.write_rows``); requests whose images cannot
           share a batch prefill in separate groups, and a group whose prefill fails prefills its requests one
           by one, so a bad request ends alone. Each first token is chosen from its row of the prefill's logits
           and streamed
        3. one decode step for the slots 0 .. B-1, B the smallest bucket holding every running slot:
           ``decode(tokens[:B], cache.first_rows(B))`` -> logits (B, v); rows of free slots are computed and
           ignored. Each running request chooses its token with its own settings and generator (the greedy rows
           from one argmax, each sampled row alone), streams it, and ends on eos, a stop string or
           max_new_tokens; its slot is freed (and zeroed) at once

Rows never move: a request keeps its slot from admission to its end, so nothing is copied when the batch
changes, and the decode step always reads and writes the same buffers (the views of ``first_rows``).

The seams for CUDA graphs: ``decode`` (default: ``model.step``) is called with the slot cache's first B rows for
B in ``buckets``; a graphed decoder (``infer.bucket_graphs.BucketGraphs``) captures ``model.step`` once per
bucket over a static token buffer and those same views, and replays it. Token choice then reads the logits as
here. An admission's prefill goes through ``encode`` (its images, ``infer.image_graphs.BucketEncoder``) and
``prefill`` (the LM, ``infer.prefill_graphs.BucketPrefill``) the same way, per batch (and length) bucket.
``stats`` tells where the engine's time went (admitting, decoding).

Threads: ``submit`` and ``cancel`` may be called from any thread and never wait for a running step (the queue
has its own lock); ``step`` runs on one thread at a time (``start`` runs it on a background thread until
``stop``). Greedy answers equal ``generate(model, ...)`` of each request
alone; a seeded sampled request draws the same tokens whatever runs beside it.

The model takes part through the protocol of ``infer.loop`` (``prefill``, ``step``, ``generation_vocab_size``,
``allocate_inference_cache``); the cache it returns must offer ``write_rows``, ``clear_rows`` and ``first_rows``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from qmamba.errors import ConfigError
from qmamba.infer.admission import admit_now, prefill_batch, prefill_groups, take_waiting
from qmamba.infer.cuda_graph import BUCKETS, bucket_size, check_decodable, model_device
from qmamba.infer.request import QueueFull, Request, RequestHandle
from qmamba.infer.sampling import next_tokens

DecodeFn = Callable[[Tensor, Any], Tensor]  # (tokens (B,), cache of B rows) -> logits (B, v), advancing the cache


@dataclass
class EngineStats:
    """Where the engine's time went, totals since it was made (the thread that steps it writes them): the steps
    that admitted requests (how many, the requests, seconds of their prefills and first tokens) and the decode
    steps (how many, the running rows they advanced, seconds including choosing the tokens). Time outside both
    is the engine waiting for work or for the lock."""

    admissions: int = 0
    admitted: int = 0
    admit_seconds: float = 0.0
    decode_steps: int = 0
    decoded_rows: int = 0
    decode_seconds: float = 0.0

    def since(self, earlier: EngineStats) -> EngineStats:
        return EngineStats(*(getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)))


class Engine:
    """Continuous batching of ``model`` over ``num_slots`` state rows (see the module docstring).

    ``tokenizer``: needed by requests with stop strings. ``clock``: seconds, for deadlines (``time.monotonic``).
    ``decode``: the decode step over the first B slots (default ``model.step``; the seam for CUDA graphs).
    ``encode``: an admission's image encoding, pixels (n, 3k, S, S) -> visual tokens (n, q, d) (default: the
    model's own, inside its prefill; ``BucketEncoder`` replays it from CUDA graphs). ``prefill``: an admission's
    prefill, (input_ids, attention_mask, [visual | pixel_values]) -> (logits (b, v), cache of b rows) (default
    ``model.prefill``; ``BucketPrefill`` replays the LM's from CUDA graphs).
    ``max_prefill_batch`` / ``max_prefill_tokens``: the most requests one step admits, and the most padded tokens
    (rows x the longest prompt, an image counted as its visual tokens) their prefill may hold (the first waiting
    request is always admitted). One admission's prefill runs before the step's decode, so these bound how long
    the running requests wait for their next token; 16384 tokens hold 64 prompts of an image as 128 visual
    tokens and some text (Q-Mamba-128's) in one prefill, already enough rows to keep a GPU busy, while prompts
    near a server's length limit (4096) join four at a time. ``admit_ratio`` / ``admit_wait_steps``: while rows
    run, admit only once the requests that could join reach ``admit_ratio`` x the running rows or
    ``admit_wait_steps`` decode steps passed since the last admission (``infer.admission``, "When"); 0 admits at
    every step."""

    def __init__(self, model, num_slots: int = 8, max_queue: int = 64, tokenizer=None,
                 buckets: tuple[int, ...] = BUCKETS, decode: DecodeFn | None = None,
                 encode: Callable[[Tensor], Tensor] | None = None, prefill: Callable[..., Any] | None = None,
                 clock: Callable[[], float] = time.monotonic, max_prefill_batch: int = 64,
                 max_prefill_tokens: int = 16384, admit_ratio: float = 0.0, admit_wait_steps: int = 0):
        check_decodable(model)
        if num_slots < 1 or max_queue < 0:
            raise ConfigError(f"num_slots must be >= 1 and max_queue >= 0, got {num_slots} and {max_queue}")
        if max_prefill_batch < 1 or max_prefill_tokens < 1:
            raise ConfigError(f"max_prefill_batch and max_prefill_tokens must be >= 1, got {max_prefill_batch} "
                              f"and {max_prefill_tokens}")
        if admit_ratio < 0 or admit_wait_steps < 0:
            raise ConfigError(f"admit_ratio and admit_wait_steps must be >= 0, got {admit_ratio} and "
                              f"{admit_wait_steps}")
        self.model, self.tokenizer, self.clock = model, tokenizer, clock
        self.num_slots, self.max_queue, self.buckets = num_slots, max_queue, tuple(buckets)
        self.max_prefill_batch, self.max_prefill_tokens = max_prefill_batch, max_prefill_tokens
        self.admit_ratio, self.admit_wait_steps = admit_ratio, admit_wait_steps
        self._visual_tokens = getattr(model, "num_visual_tokens", 1)  # an image's length in the LM
        self.decode = decode or model.step
        self.encode = encode
        self.prefill = prefill or model.prefill
        self.device = model_device(model)
        with torch.inference_mode():
            self.cache = model.allocate_inference_cache(num_slots, device=self.device)
            self.tokens = torch.zeros(num_slots, dtype=torch.long, device=self.device)  # (S,)
        self.slots: list[RequestHandle | None] = [None] * num_slots
        self.queue: deque[RequestHandle] = deque()
        self._ids = itertools.count()
        self._lock = threading.RLock()  # the slots and their buffers: held by a step
        self._queue_lock = threading.Lock()  # the queue alone: submit never waits for a step
        self._wake = threading.Condition(self._queue_lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._stats = EngineStats()
        self._admitted_at = 0  # the decode steps done when the engine last admitted (admit_wait_steps)

    # ------------------------------------------------------------------ callers' side
    def submit(self, request: Request) -> RequestHandle:
        """Queue ``request``; it starts at a coming step boundary. Raises ``QueueFull`` when ``max_queue``
        requests already wait."""
        if request.config.stop_strings and self.tokenizer is None:
            raise ConfigError("this request has stop_strings but the engine has no tokenizer: "
                              "pass tokenizer=... to Engine")
        with self._queue_lock:
            if len(self.queue) >= self.max_queue:
                raise QueueFull(f"{len(self.queue)} requests are waiting (max_queue={self.max_queue}) and "
                                f"{self.num_running} of {self.num_slots} slots run; retry later")
            deadline = self.clock() + request.timeout if request.timeout is not None else None
            handle = RequestHandle(next(self._ids), request, deadline, self)
            self.queue.append(handle)
            self._wake.notify()
            return handle

    def cancel(self, handle: RequestHandle) -> None:
        """End ``handle`` with 'cancelled': at once while it waits or when no step is running, else at the
        next step boundary."""
        handle.cancel_requested = True
        self._reap_queue()
        if self._lock.acquire(blocking=False):
            try:
                with torch.inference_mode():  # the slot buffers are inference tensors
                    self._reap()
            finally:
                self._lock.release()

    @property
    def stats(self) -> EngineStats:
        """A copy of the time totals (``EngineStats``); ``later.since(earlier)`` is what happened in between."""
        return replace(self._stats)

    @property
    def num_running(self) -> int:
        return sum(h is not None for h in self.slots)

    @property
    def num_queued(self) -> int:
        return len(self.queue)

    @property
    def has_work(self) -> bool:
        return bool(self.queue) or self.num_running > 0

    # ------------------------------------------------------------------ one step
    @torch.inference_mode()
    def step(self) -> int:
        """End, admit, then one decode step for every running request (see the module docstring). Returns
        the number of requests that ran the decode step."""
        with self._lock:
            self._reap()
            self._admit()
            running = [(i, h) for i, h in enumerate(self.slots) if h is not None]
            if not running:
                return 0
            rows = min(bucket_size(running[-1][0] + 1, self.buckets), self.num_slots)
            start = time.perf_counter()
            try:
                logits = self.decode(self.tokens[:rows], self.cache.first_rows(rows))  # (B, v)
                self._choose_rows([(slot, slot, h) for slot, h in running], logits)
            except Exception as err:  # the batch cannot go on: its requests end with the error, the engine stays
                for slot, _ in running:
                    self._free(slot, "error", err)
                raise
            finally:
                self._stats.decode_steps += 1
                self._stats.decoded_rows += len(running)
                self._stats.decode_seconds += time.perf_counter() - start
            self._reap()
            return len(running)

    def run_until_idle(self, max_steps: int | None = None) -> int:
        """Step until no request waits or runs (or ``max_steps``); returns the steps taken."""
        steps = 0
        while self.has_work and (max_steps is None or steps < max_steps):
            self.step()
            steps += 1
        return steps

    # ------------------------------------------------------------------ a background thread
    def start(self) -> None:
        """Run ``step`` on a daemon thread whenever there is work, until ``stop``."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="qmamba-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        with self._queue_lock:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._queue_lock:
                while not self.has_work and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
            try:
                self.step()
            except Exception:  # already reported to the requests it ended; the next ones may still run
                continue

    # ------------------------------------------------------------------ internals (under the lock)
    def _reap_queue(self) -> None:
        """End cancelled and expired requests that wait."""
        now = self.clock()
        with self._queue_lock:
            for handle in list(self.queue):
                reason = self._ended(handle, now)
                if reason:
                    self.queue.remove(handle)
                    handle.finish(reason)

    def _reap(self) -> None:
        """End cancelled and expired requests, waiting or running; free their slots."""
        self._reap_queue()
        now = self.clock()
        for i, handle in enumerate(self.slots):
            if handle is not None:
                reason = self._ended(handle, now)
                if reason:
                    self._free(i, reason)

    @staticmethod
    def _ended(handle: RequestHandle, now: float) -> str | None:
        if handle.cancel_requested:
            return "cancelled"
        if handle.deadline is not None and now >= handle.deadline:
            return "deadline"
        return None

    def _free(self, slot: int, reason: str, error: BaseException | None = None) -> None:
        handle = self.slots[slot]
        self.slots[slot] = None
        self.tokens[slot] = 0
        self.cache.clear_rows([slot])
        if handle is not None:
            handle.finish(reason, error)

    def _admit(self) -> None:
        """Move waiting requests into free slots: prefill them together, write each row's state into its slot
        (the lowest free slots, in queue order), then each one's first token (see ``infer.admission``)."""
        free = [i for i, h in enumerate(self.slots) if h is None]
        with self._queue_lock:
            since = self._stats.decode_steps - self._admitted_at
            if not admit_now(len(self.queue), len(free), self.num_slots - len(free), since, self.max_prefill_batch,
                             self.admit_ratio, self.admit_wait_steps):
                return
            taken = take_waiting(self.queue, len(free), self.max_prefill_batch, self.max_prefill_tokens,
                                 self._visual_tokens)
        if not taken:
            return
        start, self._admitted_at = time.perf_counter(), self._stats.decode_steps
        try:
            self._admit_taken(taken, free)
        finally:
            self._stats.admissions += 1
            self._stats.admitted += len(taken)
            self._stats.admit_seconds += time.perf_counter() - start

    def _admit_taken(self, taken: list[RequestHandle], free: list[int]) -> None:
        prefilled = [part for group in prefill_groups(taken) for part in self._prefill_group(group)]
        if not prefilled:
            return
        logits = torch.cat([part[1] for part in prefilled])  # (k, v): row r is handles[r]'s prefill
        handles = [h for part in prefilled for h in part[0]]
        queued = {h.id: n for n, h in enumerate(taken)}
        rows = sorted(range(len(handles)), key=lambda r: queued[handles[r].id])  # in queue order
        slot_of = dict(zip(rows, free))  # row -> slot: the lowest free slots, in queue order
        first = 0
        for part_handles, _, cache in prefilled:
            self.cache.write_rows(cache, [slot_of[first + i] for i in range(len(part_handles))])
            first += len(part_handles)
        for r in rows:
            self._start(handles[r], slot_of[r], logits.shape[-1])
        self._choose_rows([(r, slot_of[r], handles[r]) for r in rows], logits)

    def _prefill_group(self, handles: list[RequestHandle]) -> list[tuple[list[RequestHandle], Tensor, Any]]:
        """One prefill of ``handles`` together -> [(handles, logits (b, v), cache of b rows)]. If it fails, each
        request prefills alone, so a bad one ends with its own error and the others go on."""
        try:
            return [(handles, *self._prefill(handles))]
        except Exception as err:
            if len(handles) == 1:  # a bad request ends alone; the batch goes on
                handles[0].finish("error", err)
                return []
        return [part for h in handles for part in self._prefill_group([h])]

    def _prefill(self, handles: list[RequestHandle]) -> tuple[Tensor, Any]:
        """The requests' prefill as one left-padded batch into a fresh cache: (logits (b, v), cache of b rows)."""
        input_ids, mask, inputs = prefill_batch(handles, self.device)
        if self.encode is not None and "pixel_values" in inputs:
            inputs = {"visual": self.encode(inputs["pixel_values"])}  # (n, q, d)
        return self.prefill(input_ids, attention_mask=mask, **inputs)

    def _start(self, handle: RequestHandle, slot: int, width: int) -> None:
        """Give ``handle`` its slot, its random generator and (with a repetition penalty) its seen tokens."""
        self.slots[slot], handle.slot = handle, slot
        req = handle.request
        if req.config.repetition_penalty != 1.0:
            prompt = req.input_ids[req.input_ids >= 0].to(self.device)  # negative ids are placeholders
            handle.seen = torch.zeros(1, width, dtype=torch.bool, device=self.device)  # (1, v)
            handle.seen[0, prompt] = True
        seed = req.config.seed
        handle.generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None

    def _choose_rows(self, entries: list[tuple[int, int, RequestHandle]], logits: Tensor) -> None:
        """Each entry's (row of ``logits`` (k, v), slot, request) next token, with the request's settings and
        generator: the greedy rows from one argmax, each sampled row alone (its generator draws what it would
        alone; a row whose sampling fails ends alone); every slot's token written at once, then each request's
        token streamed in entry order."""
        logits = logits.float()
        chosen = logits[:, :self.model.generation_vocab_size].argmax(-1)  # (k,)
        sampled: dict[int, Tensor] = {}
        for row, slot, handle in entries:
            if not self._is_greedy(handle):
                try:
                    sampled[row] = self._sample(handle, logits[row:row + 1])  # (1,)
                except Exception as err:  # e.g. non-finite logits in this row alone
                    self._free(slot, "error", err)
        if sampled:
            rows = torch.tensor(list(sampled), device=chosen.device)  # (s,)
            chosen = chosen.index_put((rows,), torch.cat(list(sampled.values())))
        tokens = chosen.tolist()  # one synchronisation for the whole step
        entries = [(row, slot, h) for row, slot, h in entries if self.slots[slot] is h]
        if entries:
            self.tokens[[slot for _, slot, _ in entries]] = torch.tensor([tokens[row] for row, _, _ in entries],
                                                                         device=self.device)
        for row, slot, handle in entries:
            if self.slots[slot] is handle:  # not ended meanwhile by another request's callback
                self._take(slot, handle, tokens[row])

    @staticmethod
    def _is_greedy(handle: RequestHandle) -> bool:
        cfg = handle.request.config
        return not cfg.do_sample and cfg.repetition_penalty == 1.0

    def _sample(self, handle: RequestHandle, logits: Tensor) -> Tensor:
        """The token of one request from its logits (1, v) float, with its settings and generator -> (1,)."""
        logits = logits.clone()
        logits[:, self.model.generation_vocab_size:] = float("-inf")
        return next_tokens(logits, handle.seen, handle.request.config, handle.generator)  # (1,)

    def _take(self, slot: int, handle: RequestHandle, token: int) -> None:
        """Record and stream ``token`` (already in ``tokens[slot]``); end the request on eos, a stop string or
        max_new_tokens."""
        if handle.seen is not None:
            handle.seen[0, token] = True
        try:
            handle.emit(token)
        except Exception as err:  # the caller's callback failed (e.g. its client went away)
            self._free(slot, "cancelled", err)
            return
        reason = self._stop_reason(handle, token)
        if reason:
            self._free(slot, reason)

    def _stop_reason(self, handle: RequestHandle, token: int) -> str | None:
        cfg = handle.request.config
        if token in cfg.eos_ids():
            return "eos"
        if cfg.stop_strings:
            # a new match ends in the last token (the answer had none before), so it lies in the answer's last
            # tokens: each token is at least one byte of text and a character at most four, and a margin keeps
            # the decoder's joins at the window's start away from it; the text decoded per step stays bounded
            tail = 4 * max(map(len, cfg.stop_strings)) + 8
            text = self.tokenizer.decode(handle.tokens[-tail:])
            if any(s in text for s in cfg.stop_strings):
                return "stop"
        if len(handle.tokens) >= cfg.max_new_tokens:
            return "length"
        return None
