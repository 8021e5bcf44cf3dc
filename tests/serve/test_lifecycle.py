"""A request's life in a server with one slot and room for one waiting request: a client that goes away mid-stream
frees its slot (the waiting request runs, with its answer alone), a full queue answers 429, and a request past its
deadline ends with a 408 (an error event when streaming). The model's end-of-text is switched off here, so an
answer runs until max_tokens, its deadline or its client leaves."""

from __future__ import annotations

import dataclasses
import json
import threading
import time

import httpx
import pytest
from serve_utils import PROMPT, image, user


@pytest.fixture(scope="module")
def one_slot(server_config):
    from qmamba.serve.server import BackgroundServer, load_service

    config = dataclasses.replace(server_config, num_slots=1, max_queue=1, timeout=2.0, max_tokens_limit=4000)
    service = load_service(config)
    service.eos_token_id = None  # answers never end by themselves
    with BackgroundServer(service) as running:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            yield running, http


def _body(seed: int, max_tokens: int, stream: bool = False) -> dict:
    return {"messages": [user(PROMPT, image(seed))], "max_tokens": max_tokens, "stream": stream}


def _counts(http) -> dict[str, float]:
    lines = [line for line in http.get("/metrics").text.splitlines() if line.startswith("qmamba_requests_total")]
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in lines}


def _wait_until(condition, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting until {what}"
        time.sleep(0.01)


def test_a_client_leaving_mid_stream_frees_its_slot_and_a_full_queue_is_429(one_slot, pipe):
    server, http = one_slot
    before = _counts(http)
    waiting: dict = {}
    with http.stream("POST", "/v1/chat/completions", json=_body(1, 4000, stream=True)) as leaving:
        lines, contents = leaving.iter_lines(), 0  # (leaving the loop early would close the connection)
        while contents < 2:  # two tokens in: the long answer is running in the only slot
            line = next(lines)
            contents += '"content"' in line and '"content": ""' not in line
        thread = threading.Thread(target=lambda: waiting.update(r=http.post("/v1/chat/completions",
                                                                             json=_body(2, 8))))
        thread.start()
        _wait_until(lambda: http.get("/health").json()["queued"] == 1, "the second request waits")
        full = http.post("/v1/chat/completions", json=_body(3, 8))
        assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
        assert http.get("/health").json()["running"] == 1
    thread.join(60)  # the stream closed: its request is cancelled and the waiting one runs
    want = pipe.chat(PROMPT, image=image(2), max_new_tokens=8, eos_token_id=None)
    assert waiting["r"].status_code == 200 and waiting["r"].json()["choices"][0]["message"]["content"] == want
    after = _counts(http)
    assert after["cancelled"] - before["cancelled"] == 1 and after["queue_full"] - before["queue_full"] == 1
    assert after["length"] - before["length"] == 1
    health = http.get("/health").json()
    assert (health["running"], health["queued"]) == (0, 0)


def test_a_request_past_its_deadline_is_408(one_slot):
    server, http = one_slot
    before = _counts(http)
    late: dict = {}

    def run_next() -> None:  # waits for the slot, then runs past its own deadline
        _wait_until(lambda: http.get("/health").json()["running"] == 1, "the first request runs")
        late["r"] = http.post("/v1/chat/completions", json=_body(2, 4000))

    thread = threading.Thread(target=run_next)
    thread.start()
    with http.stream("POST", "/v1/chat/completions", json=_body(1, 4000, stream=True)) as running:
        events = [line[6:] for line in running.iter_lines() if line.startswith("data: ")]
    thread.join(60)
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "deadline_exceeded"
    assert len(events) > 4 and all("error" not in json.loads(e) for e in events[:-2])
    assert late["r"].status_code == 408 and late["r"].json()["error"]["code"] == "deadline_exceeded"
    assert _counts(http)["deadline"] - before["deadline"] == 2
