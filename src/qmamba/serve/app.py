"""The HTTP face of a ``ChatService`` (Starlette; run by uvicorn, see ``server.py``).

    POST /v1/chat/completions    OpenAI's chat completions, streamed (server-sent events) or not
    GET  /v1/models              the one model served
    GET  /health                 200 {"status": "ok"} while the engine runs, else 503
    GET  /metrics                Prometheus text (``metrics.py``)
    GET  /                       the chat page (``static/index.html``), when the package ships it

Every error is OpenAI's body ``{"error": {"message", "type", "param", "code"}}``: the client's mistakes are
4xx (a body over the size limit 413, a full queue 429), never 5xx.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from qmamba.serve.completions import Answer, complete, sse
from qmamba.serve.errors import APIError, bad_request, error_body
from qmamba.serve.schema import parse_chat_request

log = logging.getLogger("qmamba")
STATIC = Path(__file__).parent / "static"


def create_app(service) -> Starlette:
    """The routes above over ``service`` (a started ``ChatService``; the app does not start or stop it)."""

    async def chat_completions(request: Request) -> Response:
        received = time.monotonic()
        try:
            body = await read_json(request, service.config.max_body_bytes)
            chat = parse_chat_request(body, service.config.max_tokens_limit)
            if chat.model is not None and chat.model != service.name:
                raise APIError(404, f"model {chat.model!r} is not served here; this server serves {service.name!r} "
                                    f"(GET /v1/models)", "model", "model_not_found")
            prepared = await asyncio.to_thread(service.prepare, chat)
            gen = service.submit(prepared, chat, asyncio.get_running_loop())
        except APIError as e:
            if e.status != 429:
                service.metrics.outcome("rejected")
            return _error(e)
        except ClientDisconnect:
            return Response(status_code=204)
        answer = Answer(service, gen, chat, prepared, received)
        if chat.stream:
            return StreamingResponse(sse(answer), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            result = await complete(answer, lambda: _disconnected(request))
        except APIError as e:
            return _error(e)
        return JSONResponse(result) if result is not None else Response(status_code=204)

    async def models(request: Request) -> Response:
        card = {"id": service.name, "object": "model", "created": service.created, "owned_by": "qmamba"}
        return JSONResponse({"object": "list", "data": [card]})

    async def health(request: Request) -> Response:
        state = {"status": "ok" if service.running else "stopped", "model": service.name,
                 "running": service.engine.num_running, "queued": service.engine.num_queued}
        return JSONResponse(state, status_code=200 if service.running else 503)

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def index(request: Request) -> Response:
        page = STATIC / "index.html"
        if not page.is_file():
            return _error(APIError(404, "this installation has no chat page (qmamba/serve/static/index.html); use "
                                        "the API at /v1/chat/completions", None, "not_found"))
        return FileResponse(page, media_type="text/html; charset=utf-8")

    routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/models", models, methods=["GET"]), Route("/health", health, methods=["GET"]),
              Route("/metrics", metrics, methods=["GET"]), Route("/", index, methods=["GET"])]
    if STATIC.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    handlers = {HTTPException: _http_error, Exception: _server_error}
    return Starlette(routes=routes, exception_handlers=handlers)


async def read_json(request: Request, limit: int):
    """The body as JSON; a body over ``limit`` bytes is a 413 (read to its end, up to 4x the limit, so that the
    client sees the answer), a body that is not JSON a 400."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > 4 * limit:
            break
    if size > limit:
        raise APIError(413, f"the request body is {'more than ' if size > 4 * limit else ''}{size} bytes, over this "
                            f"server's limit of {limit} (one image of up to --max-image-bytes as base64, and 1 MiB "
                            f"more); send a smaller image", None, "request_too_large")
    try:
        return json.loads(b"".join(chunks), parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise bad_request(f"the request body is not valid JSON ({str(e)[:200]}); send a JSON object with "
                          f"Content-Type: application/json", None, "invalid_json") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


async def _disconnected(request: Request) -> None:
    """Returns when the client closes its connection (the body has been read, so only that can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    message = {404: f"no route {request.url.path}; see /v1/chat/completions, /v1/models, /health, /metrics",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return JSONResponse(error_body(exc.status_code, message, None, None), status_code=exc.status_code,
                        headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("qmamba serve: %s %s failed", request.method, request.url.path)
    return JSONResponse(error_body(500, f"the server failed: {type(exc).__name__}", None, "server_error"),
                        status_code=500)
