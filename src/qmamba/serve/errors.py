"""The server's errors as OpenAI's API writes them: an HTTP status and ``{"error": {message, type, param, code}}``.

Every mistake a client can make ends in an ``APIError`` (a 4xx) whose message names the field at fault and the
fix; a ``QMambaError`` from the library (bad input caught deeper, e.g. by the processor) becomes a 400 too. Only
the server's own failures are 5xx.
"""

from __future__ import annotations

from qmamba.errors import QMambaError

TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
         408: "timeout_error", 413: "invalid_request_error", 415: "invalid_request_error",
         429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(QMambaError):
    """One answer to a request that cannot be served: ``status`` (4xx for the client's mistakes), the message
    (what is wrong and the fix), ``param`` (the field, as a path like ``messages[1].content[0].image_url.url``)
    and ``code`` (a short machine-readable reason)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI's API answers."""
    kind = TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param, code)
