"""qmamba's own language model under the bench: CUDA-graph greedy decoding, captured prefill (one graph per
prompt shape; the eager prefill is reported beside it) and training, on the op backend asked for (``auto``:
the Triton kernels on a GPU, the references on CPU)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from qmamba.bench.options import BenchOptions
from qmamba.bench.runner import LMRunner
from qmamba.infer.cuda_graph import GraphDecoder
from qmamba.infer.loop import GenerationConfig
from qmamba.models.mamba_lm import MambaLM, MambaLMConfig
from qmamba.models.presets import LLM_PRESETS
from qmamba.ops import available, use_backend

LM_SHAPES = {"mamba1": "mamba-2.8b", "mamba2": "mamba2-2.7b"}
OPS = ("selective_scan", "ssd_chunk_scan", "causal_conv1d", "causal_conv1d_update", "selective_state_update",
       "add_norm", "rms_norm_gated", "gemv", "step_in")


def lm_config(layer: str, opts: BenchOptions) -> MambaLMConfig:
    """The full-size shape (Mamba-2.8B / Mamba2-2.7B), 4 layers of it with --quick, or the tiny twin."""
    name = LM_SHAPES[layer]
    if opts.tiny:
        name = "tiny-mamba" if layer == "mamba1" else "tiny-mamba2"
    cfg = LLM_PRESETS[name]()
    if opts.quick:
        cfg = dataclasses.replace(cfg, n_layer=min(cfg.n_layer, 4))
    return cfg


def build_lm(layer: str, opts: BenchOptions, device: torch.device, dtype: torch.dtype) -> MambaLM:
    """Random weights, made on ``device`` in ``dtype`` directly."""
    torch.manual_seed(opts.seed)
    return MambaLM(lm_config(layer, opts), device=device, dtype=dtype).eval()


def active_backend(device: torch.device, requested: str = "auto") -> str:
    """What 'auto' means here: 'triton' when every op has Triton kernels for the device, else 'ref' or
    'mixed (triton: ...)'."""
    if requested != "auto":
        return requested
    fast = [op for op in OPS if device.type in available(op).get("triton", ())]
    if len(fast) == len(OPS):
        return "triton"
    return f"mixed (triton: {', '.join(fast)})" if fast else "ref"


class QMambaRunner(LMRunner):
    name = "qmamba"

    def __init__(self, model: MambaLM, backend: str, device: torch.device):
        self.model, self.backend, self.device = model, backend, device
        self.decoder = GraphDecoder(model)

    def generate(self, ids: Tensor, n: int) -> None:
        with use_backend(self.backend):
            self.decoder.generate(ids, None, GenerationConfig(max_new_tokens=n))

    def prefill(self, ids: Tensor) -> None:
        with use_backend(self.backend):
            self.decoder.text_prefill(ids)(ids)

    def logits(self, ids: Tensor) -> Tensor:
        with use_backend(self.backend):
            return self.model(input_ids=ids).logits

    def parameters(self) -> list[Tensor]:
        return list(self.model.parameters())

    def captured_train(self, loss_fn, params):
        """The training step as one CUDA graph (``CapturedTrainStep``); None off the GPU."""
        from qmamba.train.graphed_step import CapturedTrainStep

        if self.device.type != "cuda":
            return None
        with use_backend(self.backend):
            return CapturedTrainStep(loss_fn, params)

    def extra(self, opts: BenchOptions, device: torch.device) -> dict:
        """The eager prefill, and the graph step alone (no prefill, no host work): the floor of decode ms/token."""
        from qmamba.ops.runtime.timing import time_ms

        out = {"backend": active_backend(device, self.backend), "cuda_graphs": self.decoder.use_graphs}
        ids = torch.randint(0, self.model.config.vocab_size, (1, opts.prompt_len), device=device)
        with use_backend(self.backend), torch.inference_mode():
            out["prefill_eager_ms"] = time_ms(lambda: self.model.prefill(ids), device, opts.warmup, opts.repeats)
        n = opts.decode_tokens
        for b, key in ((1, "decode_b1_step_ms"), (opts.batch_decode, "decode_batch_step_ms")):
            with use_backend(self.backend), torch.inference_mode():
                slot = self.decoder.slot(b)
                out[key] = time_ms(lambda slot=slot: self.decoder.decode_steps(slot, n), device,
                                   opts.warmup, opts.repeats) / n
        return out

    def close(self) -> None:
        self.decoder.slots.clear()
        self.decoder = None
