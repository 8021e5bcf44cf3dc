"""The server's tests share one tiny random-weight multimodal model saved as ``qmamba serve`` loads it, its
``Pipeline`` (the reference answers) and one running server on a free loopback port (session-scoped: the model
is built and the server started once)."""

from __future__ import annotations

import pytest
from serve_utils import build_model_dir


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "tiny-qmamba"
    build_model_dir(path)
    return path


@pytest.fixture(scope="session")
def pipe(model_dir):
    from qmamba.pipeline import Pipeline

    return Pipeline.from_pretrained(model_dir)


@pytest.fixture(scope="session")
def server_config(model_dir):
    from qmamba.serve import ServeConfig

    return ServeConfig(model=str(model_dir), num_slots=4, max_queue=64, max_image_bytes=4 << 20,
                       max_prompt_tokens=64, max_tokens_limit=64)


@pytest.fixture(scope="session")
def server(server_config):
    from qmamba.serve.server import BackgroundServer, load_service

    with BackgroundServer(load_service(server_config)) as running:
        yield running


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture()
def http(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
