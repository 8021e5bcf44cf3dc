"""Inference: sampling, the generation loop, streaming.

Layering: this package depends on torch only; models use it through ``GenerationMixin``
(they implement ``prefill`` and ``decode_step``), so nothing here imports ``qmamba.models``.
"""
