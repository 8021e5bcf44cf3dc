"""A chat-completion request body (OpenAI's schema) checked field by field into a ``ChatRequest``.

    parse_chat_request(json.loads(body), limits) -> ChatRequest    # or APIError(400) naming the field and the fix

What is taken: ``model``, ``messages`` (roles ``user`` and ``assistant``; content a string or a list of
``{"type": "text", "text"}`` and ``{"type": "image_url", "image_url": {"url"}}`` parts), ``max_tokens`` /
``max_completion_tokens``, ``temperature``, ``top_p``, ``top_k``, ``repetition_penalty``, ``stop``, ``seed``,
``n`` (1 only), ``stream``, ``stream_options.include_usage``. Fields that would change the answer in a way this
server cannot honour (``n`` > 1, ``logprobs``, ``tools``, a non-text ``response_format``, non-zero penalties,
``logit_bias``) are refused rather than ignored; other fields (``user``, ``metadata``, ...) are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qmamba.serve.errors import bad_request

ROLES = ("user", "assistant")
MAX_STOPS = 4


@dataclass(frozen=True)
class ImagePart:
    url: str
    param: str  # where it stands in the body, e.g. "messages[0].content[1].image_url.url"


@dataclass
class ChatMessage:
    role: str
    parts: list[str | ImagePart]  # text pieces and images, in order


@dataclass
class ChatRequest:
    messages: list[ChatMessage]
    model: str | None = None
    max_tokens: int | None = None  # None: the server's default
    temperature: float | None = None  # None: the model's default (greedy); 0: greedy
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False

    @property
    def images(self) -> list[ImagePart]:
        return [p for m in self.messages for p in m.parts if isinstance(p, ImagePart)]


def parse_chat_request(body, max_tokens_limit: int) -> ChatRequest:
    """Check ``body`` (the decoded JSON) and return what it asks; raises ``APIError`` (400) at the first bad
    field. ``max_tokens_limit``: the most new tokens one request may ask for."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object, got a JSON {_kind(body)}", None, "invalid_type")
    _refuse_unsupported(body)
    model = _optional(body, "model", str)
    req = ChatRequest(_messages(body.get("messages")), model=model)
    req.max_tokens = _max_tokens(body, max_tokens_limit)
    req.temperature = _number(body, "temperature", 0.0, 2.0)
    req.top_p = _number(body, "top_p", 0.0, 1.0, low_open=True)
    req.top_k = _integer(body, "top_k", -1, 1 << 20)  # -1 and 0: no top-k filter
    req.repetition_penalty = _number(body, "repetition_penalty", 0.0, 10.0, low_open=True)
    req.seed = _integer(body, "seed", 0, (1 << 63) - 1)
    req.stop = _stop(body.get("stop"))
    req.stream = bool(_optional(body, "stream", bool))
    options = _optional(body, "stream_options", dict) or {}
    usage = options.get("include_usage")
    if usage is not None and not isinstance(usage, bool):
        raise bad_request(f"stream_options.include_usage must be true or false, got {_kind(usage)}",
                          "stream_options.include_usage", "invalid_type")
    req.include_usage = bool(usage)
    return req


def _refuse_unsupported(body: dict) -> None:
    n = body.get("n")
    if n is not None and (not _is_int(n) or n != 1):
        raise bad_request(f"n={n!r}: this server gives one choice per request; send n=1 (or leave it out) and "
                          f"make several requests for several answers", "n", "unsupported_value")
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs") not in (None, 0):
        raise bad_request("logprobs are not supported by this server; leave logprobs and top_logprobs out",
                          "logprobs", "unsupported_value")
    for name in ("tools", "functions", "logit_bias"):
        if body.get(name) not in (None, [], {}):
            raise bad_request(f"{name} are not supported by this server; leave {name} out", name,
                              "unsupported_value")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise bad_request("response_format: only {\"type\": \"text\"} is supported; leave it out",
                          "response_format", "unsupported_value")
    for name in ("presence_penalty", "frequency_penalty"):
        value = body.get(name)
        if value is not None and (not _is_number(value) or value != 0):
            raise bad_request(f"{name}={value!r}: only 0 is supported; use repetition_penalty (> 1 discourages "
                              f"repeated tokens) instead", name, "unsupported_value")


def _messages(value) -> list[ChatMessage]:
    if value is None:
        raise bad_request("messages is required: a list of {\"role\": \"user\", \"content\": ...} objects",
                          "messages", "missing_required_parameter")
    if not isinstance(value, list):
        raise bad_request(f"messages must be a list of message objects, got a JSON {_kind(value)}", "messages",
                          "invalid_type")
    if not value:
        raise bad_request("messages is empty; give at least one user message", "messages", "empty_array")
    return [_message(m, f"messages[{i}]") for i, m in enumerate(value)]


def _message(msg, where: str) -> ChatMessage:
    if not isinstance(msg, dict):
        raise bad_request(f"{where} must be an object with role and content, got a JSON {_kind(msg)}", where,
                          "invalid_type")
    role = msg.get("role")
    if role in ("system", "developer"):
        raise bad_request(f"{where}.role is {role!r}, but this model's chat template has no {role} turn; put the "
                          f"instructions at the start of the first user message", f"{where}.role",
                          "unsupported_value")
    if role not in ROLES:
        raise bad_request(f"{where}.role is {_short(role)}; expected 'user' or 'assistant'", f"{where}.role",
                          "invalid_value")
    content = msg.get("content")
    if isinstance(content, str):
        parts = [content]
    elif isinstance(content, list):
        parts = [_part(p, role, f"{where}.content[{j}]") for j, p in enumerate(content)]
    else:
        raise bad_request(f"{where}.content must be a string or a list of content parts, got {_kind(content)}",
                          f"{where}.content", "invalid_type")
    if role == "user" and not any(isinstance(p, ImagePart) or p.strip() for p in parts):
        raise bad_request(f"{where} is empty: a user message needs text or an image", f"{where}.content",
                          "empty_content")
    return ChatMessage(role, parts)


def _part(part, role: str, where: str) -> str | ImagePart:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise bad_request(f"{where}.text must be a string, got {_kind(text)}", f"{where}.text", "invalid_type")
        return text
    if kind == "image_url" and role == "user":
        ref = part.get("image_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        if not isinstance(url, str) or not url:
            raise bad_request(f"{where}.image_url must be {{\"url\": \"data:image/png;base64,...\"}}",
                              f"{where}.image_url", "invalid_type")
        return ImagePart(url, f"{where}.image_url.url")
    if kind == "image_url":
        raise bad_request(f"{where}: an {role} message cannot carry an image; images go in user messages", where,
                          "invalid_value")
    raise bad_request(f"{where} must be {{\"type\": \"text\", \"text\": ...}} or {{\"type\": \"image_url\", "
                      f"\"image_url\": {{\"url\": ...}}}}, got type {_short(kind)}", where, "invalid_value")


def _max_tokens(body: dict, limit: int) -> int | None:
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = _integer(body, name, None, None)
    if value is not None and not 1 <= value <= limit:
        raise bad_request(f"{name}={value}: must be between 1 and {limit} (the server's --max-tokens-limit)",
                          name, "invalid_value")
    return value


def _stop(value) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return []
    if (not isinstance(stops, list) or len(stops) > MAX_STOPS
            or not all(isinstance(s, str) and 0 < len(s) <= 256 for s in stops)):
        raise bad_request(f"stop must be a string or a list of at most {MAX_STOPS} non-empty strings (up to 256 "
                          f"characters each), got {_short(value)}", "stop", "invalid_value")
    return stops


def _optional(body: dict, name: str, kind: type):
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise bad_request(f"{name} must be a {_KIND_NAMES[kind]}, got {_kind(value)}", name, "invalid_type")
    return value


def _integer(body: dict, name: str, low: int | None, high: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise bad_request(f"{name} must be an integer, got {_short(value)}", name, "invalid_type")
    if (low is not None and value < low) or (high is not None and value > high):
        raise bad_request(f"{name}={value}: must be between {low} and {high}", name, "invalid_value")
    return value


def _number(body: dict, name: str, low: float, high: float, low_open: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value) or not math.isfinite(value):
        raise bad_request(f"{name} must be a number, got {_short(value)}", name, "invalid_type")
    if value > high or value < low or (low_open and value == low):
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise bad_request(f"{name}={value}: must be in {bounds}", name, "invalid_value")
    return float(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_KIND_NAMES = {str: "string", bool: "boolean (true or false)", dict: "JSON object", list: "list"}


def _kind(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
