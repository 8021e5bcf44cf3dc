"""An OpenAI-compatible server over a multimodal model and the continuous-batching engine.

    qmamba serve --model DIR                    # http://127.0.0.1:8000: /v1/chat/completions, /v1/models, /metrics

Layers, each in its own file: ``schema`` (a request body checked field by field), ``images`` and ``fetch``
(where an image may come from), ``service`` (the Pipeline and the Engine; prompts built as ``Pipeline.chat``
builds them), ``bridge`` (the engine's thread to the event loop), ``detok`` (tokens to text pieces), ``completions``
(OpenAI's response objects and server-sent events), ``metrics``, ``app`` (the HTTP routes) and ``server``
(uvicorn). Needs the ``serve`` extra: ``pip install "qmamba[serve]"``.
"""

from qmamba.serve.config import ServeConfig

__all__ = ["ServeConfig"]
