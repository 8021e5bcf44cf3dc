"""Every class of bad request is a 4xx with OpenAI's error body naming the field, never a 5xx; the server's
counters move as requests come and go (``/metrics``)."""

from __future__ import annotations

import base64
import json

import pytest
from serve_utils import PROMPT, data_url, image, png_bytes, user

GOOD = {"model": "tiny-qmamba", "messages": [user(PROMPT, image(1))], "max_tokens": 4}


def _with(**fields) -> dict:
    return {**GOOD, **fields}


def _image_message(url: str) -> list:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": PROMPT}]}]


CASES = {  # name -> (body: dict or raw bytes, status, param, code)
    "malformed JSON": (b'{"model": "tiny-qmamba", "messages": [', 400, None, "invalid_json"),
    "not UTF-8": (b'{"messages": "\xff\xfe"}', 400, None, "invalid_json"),
    "NaN": (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, None, "invalid_json"),
    "a JSON array": (b"[1, 2]", 400, None, "invalid_type"),
    "messages a string": (_with(messages="hi"), 400, "messages", "invalid_type"),
    "max_tokens a string": (_with(max_tokens="12"), 400, "max_tokens", "invalid_type"),
    "temperature a string": (_with(temperature="hot"), 400, "temperature", "invalid_type"),
    "top_p a boolean": (_with(top_p=True), 400, "top_p", "invalid_type"),
    "seed a float": (_with(seed=1.5), 400, "seed", "invalid_type"),
    "stream a string": (_with(stream="yes"), 400, "stream", "invalid_type"),
    "content a number": (_with(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content",
                         "invalid_type"),
    "text part not text": (_with(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]), 400,
                           "messages[0].content[0].text", "invalid_type"),
    "unknown part type": (_with(messages=[{"role": "user", "content": [{"type": "audio"}]}]), 400,
                          "messages[0].content[0]", "invalid_value"),
    "unknown role": (_with(messages=[{"role": "wizard", "content": "hi"}]), 400, "messages[0].role",
                     "invalid_value"),
    "system role": (_with(messages=[{"role": "system", "content": "be brief"}, user(PROMPT)]), 400,
                    "messages[0].role", "unsupported_value"),
    "no messages": ({"model": "tiny-qmamba"}, 400, "messages", "missing_required_parameter"),
    "empty message list": (_with(messages=[]), 400, "messages", "empty_array"),
    "empty user message": (_with(messages=[{"role": "user", "content": "  "}]), 400, "messages[0].content",
                           "empty_content"),
    "ends with the assistant": (_with(messages=[user(PROMPT), {"role": "assistant", "content": "one"}]), 400,
                                "messages", "invalid_conversation"),
    "two images": (_with(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(image(1))}},
        {"type": "image_url", "image_url": {"url": data_url(image(2))}}, {"type": "text", "text": PROMPT}]}]),
        400, "messages", "invalid_conversation"),
    "data URL not an image": (_with(messages=_image_message("data:text/plain;base64,aGVsbG8=")), 400,
                              "messages[0].content[0].image_url.url", "invalid_image_url"),
    "image bytes not an image": (_with(messages=_image_message(
        "data:image/png;base64," + base64.b64encode(b"hello, not a png").decode())), 400,
        "messages[0].content[0].image_url.url", "invalid_image"),
    "truncated image": (_with(messages=_image_message(
        "data:image/png;base64," + base64.b64encode(png_bytes(image(3))[:200]).decode())), 400,
        "messages[0].content[0].image_url.url", "invalid_image"),
    "bad base64": (_with(messages=_image_message("data:image/png;base64,@@@")), 400,
                   "messages[0].content[0].image_url.url", "invalid_image_url"),
    "remote URL while off": (_with(messages=_image_message("https://example.com/cat.png")), 400,
                             "messages[0].content[0].image_url.url", "remote_images_disabled"),
    "local path while off": (_with(messages=_image_message("/etc/passwd")), 400,
                             "messages[0].content[0].image_url.url", "local_files_disabled"),
    "prompt over the limit": (_with(messages=[user(" ".join(["what"] * 100))]), 400, "messages",
                              "context_length_exceeded"),
    "max_tokens 0": (_with(max_tokens=0), 400, "max_tokens", "invalid_value"),
    "max_tokens negative": (_with(max_tokens=-5), 400, "max_tokens", "invalid_value"),
    "max_completion_tokens over the limit": (_with(max_completion_tokens=65), 400, "max_completion_tokens",
                                             "invalid_value"),
    "n 2": (_with(n=2), 400, "n", "unsupported_value"),
    "temperature 5": (_with(temperature=5), 400, "temperature", "invalid_value"),
    "an unknown model": (_with(model="gpt-4o"), 404, "model", "model_not_found"),
}


def assert_error_body(response, status: int, param=None, code=None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    assert error["type"] == ("invalid_request_error" if status in (400, 413) else error["type"])
    assert (error["param"], error["code"]) == (param, code), error
    return error


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request_is_a_4xx_with_an_openai_error_body(name, http):
    body, status, param, code = CASES[name]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post("/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
    assert_error_body(response, status, param, code)


def test_a_50_mb_image_is_413_and_an_image_over_the_limit_400(http, server_config):
    huge = b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": ' \
           b'"data:image/png;base64,' + b"A" * ((50 << 20) * 4 // 3) + b'"}}]}]}'
    assert_error_body(http.post("/v1/chat/completions", content=huge), 413, None, "request_too_large")
    over = base64.b64encode(b"\x89PNG" + bytes(server_config.max_image_bytes + 1000)).decode()
    body = _with(messages=_image_message("data:image/png;base64," + over))
    assert_error_body(http.post("/v1/chat/completions", json=body), 400, "messages[0].content[0].image_url.url",
                      "image_too_large")


def test_unknown_routes_and_methods_are_openai_errors(http):
    assert_error_body(http.get("/v1/nothing"), 404)
    assert_error_body(http.get("/v1/chat/completions"), 405)


def _metrics(http) -> dict[str, float]:
    """Every sample of /metrics: 'name{labels}' -> value."""
    lines = [line for line in http.get("/metrics").text.splitlines() if line and not line.startswith("#")]
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}


def test_metrics_counters_move(http, client):
    before = _metrics(http)
    got = client.chat.completions.create(**GOOD)
    assert_error_body(http.post("/v1/chat/completions", json=_with(max_tokens=0)), 400, "max_tokens",
                      "invalid_value")
    after = _metrics(http)
    outcome = got.choices[0].finish_reason
    delta = {k: after[k] - before.get(k, 0) for k in after}
    assert delta[f'qmamba_requests_total{{outcome="{outcome}"}}'] == 1
    assert delta['qmamba_requests_total{outcome="rejected"}'] == 1
    assert delta["qmamba_prompt_tokens_total"] == got.usage.prompt_tokens
    assert delta["qmamba_completion_tokens_total"] == got.usage.completion_tokens
    assert delta["qmamba_time_to_first_token_seconds_count"] == delta["qmamba_request_latency_seconds_count"] == 1
    assert delta['qmamba_request_latency_seconds_bucket{le="+Inf"}'] == 1
    assert after["qmamba_queue_length"] == after["qmamba_running_requests"] == 0
    # the engine admitted the one good request, then decoded its other tokens one row per step
    assert delta["qmamba_engine_admitted_total"] == 1 and delta["qmamba_engine_admissions_total"] == 1
    assert delta["qmamba_engine_decoded_rows_total"] == got.usage.completion_tokens - 1
    assert delta["qmamba_engine_admit_seconds_total"] > 0 and "# TYPE qmamba_engine_admitted_total counter" in (
        http.get("/metrics").text)
