"""The load generator of ``serve_load.py``: open-loop Poisson arrivals of streamed chat completions.

It runs in its own process (``python serve_load_client.py < spec.json > results.json``) so that parsing
thousands of server-sent events does not take the server's interpreter lock; it needs only the standard
library and httpx.

    spec     {"url", "model", "prompt", "max_tokens", "rate", "count", "seed", "first", "image_size", "timeout"}
    results  {"elapsed": s, "max_lag": s, "requests": [{"index", "sent", "ttft", "latency", "tokens", "text",
              "error"}, ...]}

Request i (``first`` <= i < ``first + count``) carries image ``png_bytes(seed, i, image_size)``, random
pixels, so no two requests of a run share an image. Arrival times are seeded exponential gaps at ``rate``
per second; a request is sent at its time whatever the server's state (open loop), and its time-to-first-token
and latency count from that scheduled time, so a client that falls behind shows as latency, not as a lower
rate. ``error`` is None for an answer, else its class: "http 429", "stream error server_error", "timeout",
"no [DONE]", an httpx exception's name.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import struct
import sys
import time
import zlib


def png_bytes(seed: int, index: int, size: int) -> bytes:
    """A ``size`` x ``size`` RGB PNG of seeded random pixels (no imaging library needed)."""
    rng = random.Random(seed * 1_000_003 + index)
    rows = b"".join(b"\x00" + rng.randbytes(3 * size) for _ in range(size))  # filter 0, then RGB per pixel

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def arrivals(rate: float, count: int, seed: int) -> list[float]:
    """Seconds from the start at which each of ``count`` requests is sent: a Poisson process of ``rate``/s."""
    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(count):
        t += rng.expovariate(rate)
        out.append(t)
    return out


def body(spec: dict, index: int) -> dict:
    url = "data:image/png;base64," + base64.b64encode(png_bytes(spec["seed"], index, spec["image_size"])).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": spec["prompt"]}]
    return {"model": spec["model"], "messages": [{"role": "user", "content": content}],
            "max_tokens": spec["max_tokens"], "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}


async def _read_stream(response, result: dict, start: float) -> None:
    """Fill ``result`` from the server-sent events of one answer."""
    pieces = []
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        data = line[len("data: "):]
        if data == "[DONE]":
            if pieces is not None:  # else an error event came first: it stays the result
                result["text"], result["error"] = "".join(pieces), None
            return
        event = json.loads(data)
        if "error" in event:
            result["error"] = f"stream error {event['error'].get('code')}"
            pieces = None
        elif event.get("usage"):
            result["tokens"] = event["usage"]["completion_tokens"]
        elif pieces is not None and event["choices"] and event["choices"][0]["delta"].get("content"):
            if result["ttft"] is None:
                result["ttft"] = time.perf_counter() - start
            pieces.append(event["choices"][0]["delta"]["content"])
    result["error"] = result["error"] or "no [DONE]"


async def one(client, spec: dict, index: int, start: float, at: float, lag: list[float]) -> dict:
    """Send request ``index`` at ``start + at``; its result (times from the scheduled send)."""
    import httpx

    await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
    sent = start + at
    lag.append(time.perf_counter() - sent)
    result = {"index": index, "sent": at, "ttft": None, "latency": None, "tokens": None, "text": None,
              "error": "unfinished"}
    try:
        async with client.stream("POST", spec["url"] + "/v1/chat/completions", json=body(spec, index)) as response:
            if response.status_code != 200:
                await response.aread()
                result["error"] = f"http {response.status_code}"
                return result
            await _read_stream(response, result, sent)
    except httpx.TimeoutException:
        result["error"] = "timeout"
    except httpx.HTTPError as e:
        result["error"] = type(e).__name__
    result["latency"] = time.perf_counter() - sent
    return result


async def run(spec: dict) -> dict:
    import httpx

    times = arrivals(spec["rate"], spec["count"], spec["seed"] * 7919 + spec["first"])
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)  # never queue in the client
    timeout = httpx.Timeout(spec["timeout"], connect=spec["timeout"], pool=None)
    lag: list[float] = []
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        start = time.perf_counter() + 0.05
        tasks = [one(client, spec, spec["first"] + i, start, at, lag) for i, at in enumerate(times)]
        requests = await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"elapsed": elapsed, "max_lag": max(lag, default=0.0), "requests": list(requests)}


def raise_file_limit() -> None:
    """Open connections are files: lift the soft limit to the hard one (thousands may be open at overload)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


if __name__ == "__main__":
    raise_file_limit()
    json.dump(asyncio.run(run(json.load(sys.stdin))), sys.stdout)
