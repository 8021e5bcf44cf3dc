"""Inference: sampling, the generation loop, streaming, CUDA-graph decoding.

    qmamba.generate(model, input_ids, max_new_tokens=32)     prompt + new tokens (b, l + n)
    qmamba.stream(model, input_ids, ...)                     the new tokens (b,) step by step
    Engine(model, num_slots=8).submit(Request(ids, ...))     continuous batching: requests join a running batch

Layering: this package depends on torch, ``qmamba.ops``, ``qmamba.errors`` and ``qmamba.utils`` only. A model
takes part through the protocol documented in ``infer.loop`` (``prefill``, ``step``, ``generation_vocab_size``,
and ``allocate_inference_cache`` for CUDA graphs), so nothing here imports ``qmamba.models``.
"""

from qmamba.infer.engine import Engine, EngineStats
from qmamba.infer.generate import generate, stream, stream_text
from qmamba.infer.loop import GenerationConfig
from qmamba.infer.request import QueueFull, Request, RequestHandle

__all__ = ["Engine", "EngineStats", "GenerationConfig", "QueueFull", "Request", "RequestHandle", "generate", "stream",
           "stream_text"]
