"""What ``qmamba serve`` runs with: the model, where it listens, the engine's size and the limits on requests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    model: str  # a multimodal model directory (Pipeline.from_pretrained)
    host: str = "127.0.0.1"
    port: int = 8000
    num_slots: int = 8  # requests in the decode batch at once (the engine's state rows)
    max_queue: int = 64  # requests waiting for a slot; one more is answered 429
    timeout: float = 300.0  # seconds from arrival to a request's deadline
    device: str | None = None
    dtype: str | None = None
    served_model_name: str | None = None  # default: the model directory's name
    allow_local_files: str | None = None  # a directory image paths may point into; None: no local paths
    allow_remote_images: bool = False
    max_image_bytes: int = 20 << 20  # one image, encoded
    max_prompt_tokens: int | None = 4096  # the image counted as one token, as training's max_length counts it
    max_tokens_limit: int = 4096  # the most new tokens a request may ask for
    default_max_tokens: int = 128  # new tokens when a request names none (the model's generation_config)
    remote_timeout: float = 10.0  # seconds for one remote image, redirects included
    remote_max_redirects: int = 3
    cuda_graphs: bool = True  # on a GPU, replay the decode step from one CUDA graph per batch bucket
    max_prefill_batch: int = 64  # requests admitted together in one prefill (Engine)
    max_prefill_tokens: int = 16384  # rows x longest prompt of one admission prefill (Engine)
    # while rows run, admit once ratio x running requests could join or that many decode steps passed since the last
    # (infer.admission "When"; benchmarks/serve_load.py --admit-ratio compares settings under load)
    admit_ratio: float = 0.25
    admit_wait_steps: int = 8

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read: one image as base64 (4/3 of its bytes) and 1 MiB of the rest."""
        return self.max_image_bytes * 4 // 3 + (1 << 20)
