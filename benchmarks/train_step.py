"""Time one training step of a preset with random weights: bf16 autocast over fp32 weights, activation
checkpointing per block, the stage's freezing and optimizer. Prints a table and writes JSON.

    python benchmarks/train_step.py --preset qmamba-256 --stage finetune --micro-batch 4 --text-len 512
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from qmamba.constants import IMAGE_TOKEN_ID
from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset
from qmamba.stages import apply_stage
from qmamba.train.config import StageConfig
from qmamba.train.optim import build_optimizer
from qmamba.train.parallelize import apply_activation_checkpointing


def _median_after_first(times: list[float]) -> float:
    """Median step time, the first (warm-up) step left out when there are others."""
    rest = sorted(times[1:]) or times
    return rest[len(rest) // 2]


def random_batch(model: MultimodalModel, b: int, text_len: int, device) -> dict:
    vocab = model.config.llm.vocab_size
    ids = torch.randint(0, vocab, (b, text_len), device=device)
    ids[:, 8] = IMAGE_TOKEN_ID  # the image placeholder after a short prefix
    s = model.config.vision.image_size
    pixels = torch.randn(b, 3 * len(model.config.vision.hf_configs), s, s, device=device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clamp(min=0),
            "pixel_values": pixels}


def run(preset: str, stage: str, micro_batch: int, text_len: int, steps: int, checkpointing: bool) -> dict:
    device = torch.device("cuda")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = MultimodalModel(get_preset(preset), device=device)
    build_s = time.perf_counter() - t0
    report = apply_stage(model, stage)
    model.vision.to(torch.bfloat16)
    if checkpointing:
        apply_activation_checkpointing(model)
    opt = build_optimizer(model, StageConfig(name=stage))
    model.train()
    batch = random_batch(model, micro_batch, text_len, device)
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast("cuda", torch.bfloat16):
            out = model(**batch, reduction="mean")
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    seq = text_len + model.num_visual_tokens - 1
    return {"preset": preset, "stage": stage, "micro_batch": micro_batch, "sequence": seq,
            "trainable_M": sum(t for t, _ in report.values()) / 1e6, "build_s": build_s,
            "first_step_s": times[0], "step_s": sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0],
            "tokens_per_s": micro_batch * seq / _median_after_first(times),
            "peak_gb": torch.cuda.max_memory_allocated() / 2**30, "loss": float(out.loss)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="qmamba-256")
    p.add_argument("--stage", default="finetune", choices=["align", "finetune", "full"])
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--text-len", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--no-checkpointing", action="store_true")
    p.add_argument("--json", default=None, help="write the result here")
    a = p.parse_args()
    r = run(a.preset, a.stage, a.micro_batch, a.text_len, a.steps, not a.no_checkpointing)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({**r, "device": torch.cuda.get_device_name()}, f, indent=2)
    print(f"| {torch.cuda.get_device_name()} | {r['preset']} {r['stage']} | batch {r['micro_batch']} x "
          f"{r['sequence']} tokens | step {r['step_s']:.2f} s (first {r['first_step_s']:.1f} s) | "
          f"{r['tokens_per_s']:.0f} tok/s | peak {r['peak_gb']:.1f} GB | trainable {r['trainable_M']:.0f}M |")


if __name__ == "__main__":
    main()
