"""The server's counters, gauges and histograms in Prometheus' text format (``GET /metrics``), without a client
library: a few numbers under one lock.

    qmamba_requests_total{outcome}            requests by how they ended: stop, length, cancelled, deadline, error,
                                              rejected (a 4xx answer), queue_full (429)
    qmamba_prompt_tokens_total                prompt tokens of admitted requests (an image counts as one)
    qmamba_completion_tokens_total            tokens generated
    qmamba_queue_length                       requests waiting for a slot (read from the engine when scraped)
    qmamba_running_requests                   requests in the running decode batch (idem)
    qmamba_engine_*_total                     the engine's admissions and decode steps: counts, requests or
                                              rows, seconds (``Engine.stats``; read when scraped)
    qmamba_time_to_first_token_seconds        histogram: request received -> its first token
    qmamba_request_latency_seconds            histogram: request received -> its last token
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
OUTCOMES = ("stop", "length", "cancelled", "deadline", "error", "rejected", "queue_full")


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        i = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
        self.counts[i] += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out, total = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts):
            total += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f'{name}_bucket{{le="{le}"}} {total}')
        return out + [f"{name}_sum {self.sum:.6f}", f"{name}_count {total}"]


class Metrics:
    """What ``/metrics`` shows. ``gauges`` and ``counters``: name -> (help, a function read at each scrape)."""

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]] | None = None,
                 counters: dict[str, tuple[str, Callable[[], float]]] | None = None):
        self._lock = threading.Lock()
        self.requests: dict[str, int] = defaultdict(int)
        self.prompt_tokens = self.completion_tokens = 0
        self.ttft, self.latency = Histogram(), Histogram()
        self.gauges, self.counters = dict(gauges or {}), dict(counters or {})

    def outcome(self, outcome: str) -> None:
        with self._lock:
            self.requests[outcome] += 1

    def finished(self, outcome: str, prompt_tokens: int, completion_tokens: int, ttft: float | None,
                 latency: float) -> None:
        """One admitted request ended: its outcome, token counts and times (seconds)."""
        with self._lock:
            self.requests[outcome] += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            if ttft is not None:
                self.ttft.observe(ttft)
            self.latency.observe(latency)

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP qmamba_requests_total Chat-completion requests by outcome.",
                     "# TYPE qmamba_requests_total counter"]
            lines += [f'qmamba_requests_total{{outcome="{o}"}} {self.requests[o]}' for o in OUTCOMES]
            for name, value, what in (("prompt_tokens", self.prompt_tokens, "Prompt tokens of admitted requests."),
                                      ("completion_tokens", self.completion_tokens, "Tokens generated.")):
                lines += [f"# HELP qmamba_{name}_total {what}", f"# TYPE qmamba_{name}_total counter",
                          f"qmamba_{name}_total {value}"]
            for kind, readers in (("gauge", self.gauges), ("counter", self.counters)):
                for name, (what, read) in readers.items():
                    lines += [f"# HELP {name} {what}", f"# TYPE {name} {kind}", f"{name} {read():g}"]
            for name, hist, what in (("qmamba_time_to_first_token_seconds", self.ttft,
                                      "Seconds from a request's arrival to its first token."),
                                     ("qmamba_request_latency_seconds", self.latency,
                                      "Seconds from a request's arrival to its last token.")):
                lines += [f"# HELP {name} {what}", f"# TYPE {name} histogram", *hist.lines(name)]
        return "\n".join(lines) + "\n"
