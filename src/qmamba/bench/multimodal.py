"""Multimodal figures for full-size presets with random weights, built on the device in its dtype:

    latency of one VQA answer at batch 1 (image + question -> answer tokens), by component
        vision encoder(s) | connector | LM prefill | greedy decode of the answer | total (captured prefill + decode)
    throughput: answers per second at batch ``vqa_batch``, with the same components at that batch
    utilisation of each component at both batches: achieved TFLOP/s and GB/s beside the card's measured
        matmul rate and copy bandwidth (``bench/utilisation.py``)
    one training step of each of ``train_presets`` (finetune stage: bf16 autocast, activation checkpointing)

Each component runs as its own CUDA graph (``Captured``) so launch overhead does not hide its cost; the
total uses ``GraphDecoder.multimodal_prefill`` (vision + connector + LM prefill as one graph).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from qmamba.bench.options import BenchOptions
from qmamba.bench.utilisation import Work, count_flops, measure_peaks, rates, tensor_bytes, weight_bytes
from qmamba.constants import IMAGE_TOKEN_ID
from qmamba.infer.cuda_graph import Captured, GraphDecoder
from qmamba.infer.loop import GenerationConfig
from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset
from qmamba.models.splice import image_column, splice_at_column
from qmamba.ops.runtime.timing import peak_gib, time_ms


def preset_config(preset: str, opts: BenchOptions):
    cfg = get_preset(f"tiny-{preset}" if opts.tiny else preset)
    if opts.quick:
        cfg.llm = dataclasses.replace(cfg.llm, n_layer=min(cfg.llm.n_layer, 4))
    return cfg


def build_multimodal(preset: str, opts: BenchOptions, device: torch.device, dtype: torch.dtype | None):
    torch.manual_seed(opts.seed)
    return MultimodalModel(preset_config(preset, opts), device=device, dtype=dtype).eval()


def vqa_inputs(model: MultimodalModel, batch: int, question_len: int, device: torch.device,
               seed: int) -> tuple[Tensor, Tensor]:
    """(input_ids (b, 1 + question_len) with the image placeholder, pixel_values (b, 3k, S, S) fp32)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.llm.vocab_size, (batch, question_len + 1), generator=g)
    ids[:, 0 if model.config.image_position == "prefix" else min(8, question_len)] = IMAGE_TOKEN_ID
    s, k = model.config.vision.image_size, len(model.config.vision.hf_configs)
    pixels = torch.randn(batch, 3 * k, s, s, generator=g)
    return ids.to(device), pixels.to(device)


def _answer(decoder: GraphDecoder, ids: Tensor, pixels: Tensor, cfg: GenerationConfig):
    """A timed answer: the captured prefill, then greedy decoding; no host sync before the end."""
    prefill = decoder.multimodal_prefill(ids, pixels)
    b = ids.shape[0]

    def run():
        prefill.slot.begin(b, cfg)
        prefill()
        return decoder.greedy(prefill.slot, b, cfg.max_new_tokens)
    return run


def _state_bytes(cache) -> int:
    return tensor_bytes(t for layer in cache.layers for t in (layer.conv_state, layer.ssm_state))


def component_work(model: MultimodalModel, ids: Tensor, pixels: Tensor, batch: int, answer_tokens: int
                   ) -> dict[str, Work]:
    """The work of each component for ``batch`` answers, counted on one row (``ids`` (1, l), ``pixels``):
    products grow with the batch, the weights are read once per call (once per decode step)."""
    lm, dtype = model.llm, next(model.connector.parameters()).dtype
    flops = count_flops(lambda: model.vision(pixels))
    features = model.vision(pixels).to(dtype)  # (1, p, d_vision)
    vision = Work(flops * batch, weight_bytes(model.vision) + batch * tensor_bytes([pixels, features]))
    flops = count_flops(lambda: model.connector(features))
    visual = model.connector(features)  # (1, q, d)
    projector = Work(flops * batch, weight_bytes(model.connector) + batch * tensor_bytes([features, visual]))
    embeds = splice_at_column(lm.embed(ids.clamp(min=0)), visual, image_column(ids))  # (1, L, d)
    flops = count_flops(lambda: lm.prefill(inputs_embeds=embeds))
    logits, cache = lm.prefill(inputs_embeds=embeds)  # (1, v)
    state = _state_bytes(cache)
    prefill = Work(flops * batch, weight_bytes(lm) + batch * (tensor_bytes([embeds, logits]) + state))
    token = logits.argmax(-1)  # (1,)
    flops = count_flops(lambda: lm.step(token, cache))
    step = Work(flops * batch, weight_bytes(lm) + batch * (2 * state + tensor_bytes([logits])))
    return {"vision": vision, "projector": projector, "lm_prefill": prefill, "decode": step * (answer_tokens - 1)}


def components(model: MultimodalModel, decoder: GraphDecoder, opts: BenchOptions, device: torch.device,
               batch: int, peaks: dict | None = None) -> dict:
    """Latency of each stage of ``batch`` answers, each captured alone, and of the whole answer."""
    ids, pixels = vqa_inputs(model, batch, opts.question_len, device, opts.seed + batch)
    use, pool = decoder.use_graphs, (decoder.pool if decoder.use_graphs else None)
    lm, i = model.llm, image_column(ids)
    cfg = GenerationConfig(max_new_tokens=opts.answer_tokens)
    graphs = []  # alive to the end: a graph's outputs live in the shared pool, which goes with its last graph

    def timed(fn) -> tuple[float, object]:
        graphs.append(Captured(fn, use, decoder.warmup, pool))
        return time_ms(graphs[-1], device, opts.warmup, opts.repeats), graphs[-1]()

    out: dict = {}
    out["vision_ms"], features = timed(lambda: model.vision(pixels))  # (b, p, d_vision)
    towers = model.vision.towers
    if len(towers) > 1:
        chunks = pixels.split(3, dim=1)
        out["vision_towers_ms"] = [timed(lambda t=t, x=x: t(x.to(next(t.parameters()).dtype)))[0]
                                   for t, x in zip(towers, chunks)]
    dtype = next(model.connector.parameters()).dtype
    out["projector_ms"], visual = timed(lambda: model.connector(features.to(dtype)))  # (b, q, d)
    embeds = splice_at_column(lm.embed(ids.clamp(min=0)), visual, i)  # (b, L, d)
    slot = decoder.slot(batch)
    cache = slot.row_cache(batch)

    def lm_prefill():
        cache.reset()
        return slot.logits[:batch].copy_(lm.prefill(inputs_embeds=embeds, cache=cache)[0])
    out["lm_prefill_ms"], _ = timed(lm_prefill)
    slot.begin(batch, cfg)
    out["decode_ms"] = time_ms(lambda: decoder.greedy(slot, batch, opts.answer_tokens), device, opts.warmup,
                               opts.repeats)
    out["total_ms"] = time_ms(_answer(decoder, ids, pixels, cfg), device, opts.warmup, opts.repeats)
    out.update(visual_tokens=visual.shape[1], prompt_tokens=embeds.shape[1])
    if peaks is not None:
        work = component_work(model, ids[:1], pixels[:1], batch, opts.answer_tokens)
        out["utilisation"] = {name: rates(w, out[f"{name}_ms"], peaks) for name, w in work.items()}
    return out


def vqa_figures(preset: str, opts: BenchOptions, device: torch.device, dtype: torch.dtype) -> dict:
    model = build_multimodal(preset, opts, device, dtype)
    decoder = GraphDecoder(model)
    try:
        with torch.inference_mode():
            out = {"image_size": model.config.vision.image_size, "cuda_graphs": decoder.use_graphs,
                   "peaks": measure_peaks(device, dtype)}
            out.update(components(model, decoder, opts, device, 1, out["peaks"]))
            at_batch = components(model, decoder, opts, device, opts.vqa_batch, out["peaks"])  # where it goes
            out.update(batch_ms=at_batch["total_ms"], answers_per_s=opts.vqa_batch / at_batch["total_ms"] * 1e3,
                       batch_components={k: v for k, v in at_batch.items() if k.endswith("_ms")},
                       batch_utilisation=at_batch["utilisation"])
        out["parameters_M"] = {k: round(v / 1e6, 1) for k, v in model.parameter_counts().items()}
        return out
    finally:
        decoder.slots.clear()


def train_step_figures(preset: str, opts: BenchOptions, device: torch.device, batch: int = 4,
                       text_len: int = 512) -> dict:
    """One finetune-stage optimizer step of ``preset`` (fp32 weights, bf16 autocast on a GPU)."""
    from qmamba.stages import apply_stage
    from qmamba.train.config import StageConfig
    from qmamba.train.optim import build_optimizer
    from qmamba.train.parallelize import apply_activation_checkpointing

    model = build_multimodal(preset, opts, device, None)
    apply_stage(model, "finetune")
    if device.type == "cuda":
        model.vision.to(torch.bfloat16)
    apply_activation_checkpointing(model)
    opt = build_optimizer(model, StageConfig(name="finetune"))
    model.train()
    ids, pixels = vqa_inputs(model, batch, text_len, device, opts.seed + 2)
    labels = ids.clamp(min=0)

    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(ids, pixel_values=pixels, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    ms = time_ms(step, device, max(opts.warmup, 1), opts.repeats)
    return {"stage": "finetune", "batch": batch, "sequence": text_len + model.num_visual_tokens,
            "step_ms": ms, "peak_gib": peak_gib(step, device)}
