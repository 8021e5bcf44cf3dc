"""Running the server: ``run`` blocks (``qmamba serve``); ``BackgroundServer`` runs it on a thread (tests, scripts).

    with BackgroundServer(load_service(ServeConfig(model=DIR)), port=0) as server:   # port 0: a free one
        OpenAI(base_url=server.url + "/v1", api_key="none").chat.completions.create(...)
"""

from __future__ import annotations

import logging
import threading

from qmamba.serve.app import create_app
from qmamba.serve.config import ServeConfig
from qmamba.serve.service import ChatService

log = logging.getLogger("qmamba")


def load_service(config: ServeConfig) -> ChatService:
    """The model of ``config.model`` with its processor, and an engine over it (not started)."""
    from qmamba.pipeline import Pipeline

    return ChatService(Pipeline.from_pretrained(config.model, device=config.device, dtype=config.dtype), config)


def run(service: ChatService) -> None:
    """Serve until interrupted (Ctrl-C), then stop the engine."""
    import uvicorn

    service.start()
    log.info("serving %s at http://%s:%d (OpenAI API under /v1)", service.name, service.config.host,
             service.config.port)
    try:
        uvicorn.run(create_app(service), host=service.config.host, port=service.config.port, log_level="info")
    finally:
        service.stop()


class BackgroundServer:
    """The server on a daemon thread, bound to ``host``:``port`` (0: a free port, read back into ``port``)."""

    def __init__(self, service: ChatService, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.service, self.host = service, host
        config = uvicorn.Config(create_app(service), host=host, port=port, log_level=log_level, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="qmamba-serve", daemon=True)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.service.start()
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server did not start on {self.host}:{self.port}")
            self.thread.join(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.service.stop()
