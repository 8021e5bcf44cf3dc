"""Inference: sampling, the generation loop, streaming, CUDA-graph decoding.

Layering: this package depends on torch and ``qmamba.ops`` only; models use it through ``GenerationMixin``
(they implement ``prefill`` and ``decode_step``), so nothing here imports ``qmamba.models``.
"""
