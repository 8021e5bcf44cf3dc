"""Inference: sampling, the generation loop, streaming, CUDA-graph decoding.

    qmamba.generate(model, input_ids, max_new_tokens=32)     prompt + new tokens (b, l + n)
    qmamba.stream(model, input_ids, ...)                     the new tokens (b,) step by step

Layering: this package depends on torch, ``qmamba.ops``, ``qmamba.errors`` and ``qmamba.utils`` only. A model
takes part through the protocol documented in ``infer.loop`` (``prefill``, ``step``, ``generation_vocab_size``,
and ``allocate_inference_cache`` for CUDA graphs), so nothing here imports ``qmamba.models``.
"""

from qmamba.infer.generate import generate, stream, stream_text
from qmamba.infer.loop import GenerationConfig

__all__ = ["GenerationConfig", "generate", "stream", "stream_text"]
