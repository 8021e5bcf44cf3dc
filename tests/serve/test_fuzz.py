"""A seeded fuzzer: 1,000 malformed requests (mutated valid bodies, wrong types, garbage bytes, huge fields, bad
images) never get a 5xx; every refusal carries OpenAI's error body; the server still answers a valid request
exactly as ``Pipeline.chat`` does afterwards."""

from __future__ import annotations

import base64
import copy
import json
import random
from collections import Counter

from serve_utils import PROMPT, image, png_bytes, user

N = 1000
VALID = {"model": "tiny-qmamba", "messages": [user(PROMPT, image(5)), {"role": "assistant", "content": "one"},
                                              user("how many ?")],
         "max_tokens": 3, "temperature": 0, "stop": ["zz"], "stream": False, "seed": 1}
SMALL_PNG = png_bytes(image(9).resize((8, 8)))


def _values(rng: random.Random):
    """A random JSON value of a random kind, huge ones included."""
    return rng.choice([
        None, True, False, 0, -1, 1, 3, 2**63, -(2**70), 1e308, -0.5, 0.5, 1.5, "", "x", "user", "image_url",
        "text", "a" * rng.choice([10, 10_000, 300_000]), [], [1, "a"], {}, {"type": "text"}, {"url": 5},
        ["stop"] * rng.randint(0, 9), [[[[]]]], {"role": "user", "content": "hi"},
        "data:image/png;base64," + base64.b64encode(SMALL_PNG).decode(),
        "data:image/png;base64," + base64.b64encode(SMALL_PNG[:rng.randint(0, len(SMALL_PNG))]).decode(),
        "data:image/jpeg;base64,////", "data:,abc", "http://127.0.0.1/x.png", "file:///etc/passwd", "ftp://x",
        "../../etc/passwd", "data:image/png;base64," + "A" * rng.randint(0, 50),
    ])


def _paths(node, prefix=()):
    """Every (container, key) in a JSON tree, for mutation."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        yield node, key
        yield from _paths(value, (*prefix, key))


def _mutated(rng: random.Random) -> dict:
    body = copy.deepcopy(VALID)
    for _ in range(rng.randint(1, 4)):
        spots = list(_paths(body))
        parent, key = rng.choice(spots)
        action = rng.random()
        if action < 0.6:
            parent[key] = _values(rng)
        elif action < 0.8 and isinstance(parent, dict):
            del parent[key]
        elif isinstance(parent, dict):
            parent[rng.choice(["n", "logprobs", "tools", "stream_options", "response_format", "top_k", "top_p",
                               "max_completion_tokens", "presence_penalty", "unknown"])] = _values(rng)
        else:
            parent.insert(rng.randint(0, len(parent)), _values(rng))
    return body


def _bad_image(rng: random.Random) -> dict:
    """The valid body with its image's bytes damaged: flipped, cut, or another media type."""
    data = bytearray(SMALL_PNG)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] = rng.getrandbits(8)
    data = bytes(data[:rng.randint(0, len(data))] if rng.random() < 0.3 else data)
    media = rng.choice(["image/png", "image/png", "image/gif", "text/html", "", "image/svg+xml"])
    body = copy.deepcopy(VALID)
    body["messages"][0]["content"][0]["image_url"]["url"] = f"data:{media};base64,{base64.b64encode(data).decode()}"
    return body


def _malformed(rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(["mutated", "mutated", "mutated", "image", "garbage", "truncated", "wrong type", "nested",
                       "bad utf8", "huge"])
    if kind == "mutated":
        return json.dumps(_mutated(rng)).encode(), kind
    if kind == "image":
        return json.dumps(_bad_image(rng)).encode(), kind
    if kind == "garbage":
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 3000))), kind
    if kind == "truncated":
        text = json.dumps(_mutated(rng)).encode()
        return text[:rng.randint(0, max(len(text) - 1, 0))], kind
    if kind == "wrong type":
        return json.dumps(rng.choice([[], [VALID], 3, "messages", None, True])).encode(), kind
    if kind == "nested":
        depth = rng.choice([10, 1000, 100_000])
        return (b'{"messages": ' + b"[" * depth + b"]" * depth + b"}"), kind
    if kind == "huge":
        field = rng.choice(["messages", "stop", "model", "text"])
        big = {"messages": [user("what")] * 20_000, "stop": ["what"] * 5000, "model": "m" * 500_000,
               "text": [user("what " * 100_000)]}[field]
        return json.dumps({**VALID, field if field != "text" else "messages": big}).encode(), kind
    text = bytearray(json.dumps(_mutated(rng)).encode())
    text[rng.randrange(len(text))] = rng.choice([0xFF, 0xFE, 0xC3, 0x80])
    return bytes(text), kind


def test_a_thousand_malformed_requests_never_get_a_5xx(http, pipe):
    rng = random.Random(2024)
    statuses, kinds = Counter(), Counter()
    for i in range(N):
        body, kind = _malformed(rng)
        kinds[kind] += 1
        response = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
        statuses[response.status_code] += 1
        assert response.status_code < 500, f"request {i} ({kind}): {response.status_code} {response.text[:300]}"
        if response.status_code >= 400:
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"], error
        elif response.headers["content-type"].startswith("text/event-stream"):
            assert response.text.rstrip().endswith("data: [DONE]")
        else:
            assert response.json()["object"] == "chat.completion"
    print(f"fuzzer: {N} requests, status codes {dict(sorted(statuses.items()))}, kinds {dict(kinds)}")
    assert sum(statuses.values()) == N and statuses[400] > N // 2
    history = [{"role": "user", "content": [{"type": "image", "image": image(5)}, {"type": "text", "text": PROMPT}]},
               {"role": "assistant", "content": "one"}, {"role": "user", "content": "how many ?"}]
    want = pipe.chat(history, max_new_tokens=3)
    got = http.post("/v1/chat/completions", json=VALID)
    assert got.status_code == 200 and got.json()["choices"][0]["message"]["content"] == want
