"""The micro LM's pretraining step on a GPU, three ways: eager reading each step's loss back (how the loop ran
before), eager reading the losses every 20 steps, and replayed from a CUDA graph (``LMTrainConfig.cuda_graph``);
with the kernels' own time per step, which says how much of a step the host's launches took.

    python benchmarks/micro_lm_step.py                    # the small size's LM at its batch, 100 timed steps
    python benchmarks/micro_lm_step.py --size small --steps 100 --out $OUT

Random tokens of the LM's vocabulary in rows of ``seq_len``; every variant starts from the same weights and
trains on the same rows, so the losses of the three are printed side by side (they make the same updates).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from qmamba.micro.instruct_lm import reply_loss
from qmamba.micro.loop import fit
from qmamba.micro.sizes import get_size
from qmamba.models.mamba_lm import MambaLM
from qmamba.models.presets import LLM_PRESETS

VARIANTS = {"eager, loss read every step": (1, False), "eager, losses read every 20 steps": (20, False),
            "CUDA graph": (20, True)}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small", help="the micro size whose LM shape and pretraining batch are timed")
    p.add_argument("--steps", type=int, default=100,
                   help="timed steps per variant after 5 untimed ones (the graph's three eager warm-up steps and "
                        "its capture are timed: a training run pays them too)")
    p.add_argument("--vocab", type=int, default=672, help="vocabulary (the small build's tokenizer has 672)")
    p.add_argument("--out", default=None, help="folder for micro_lm_step.json")
    return p.parse_args(argv)


def run(variant: str, shape: dict, rows: torch.Tensor, batch: int, steps: int, vocab: int) -> dict:
    read_every, graph = VARIANTS[variant]
    torch.manual_seed(0)
    config = dataclasses.replace(LLM_PRESETS["micro-mamba"](), **shape, vocab_size=vocab)
    model = MambaLM(config, device="cuda")

    def backward(idx):
        ids = rows[idx].cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = reply_loss(model, ids, ids)
        loss.backward()
        return loss.detach() if read_every > 1 else float(loss)

    graphed = (lambda idx: (rows[idx],), lambda ids: reply_loss(model, ids, ids)) if graph else None
    args = (model, len(rows), batch)
    tail = (0, (1e-3, 0.1, (0.9, 0.95), 0.05), 1.0, backward, variant, False)
    fit(*args, 5, *tail, read_every=read_every, graphed=graphed)  # compiles and tunes the kernels
    torch.cuda.synchronize()
    start = time.perf_counter()
    log = fit(*args, steps, *tail, read_every=read_every, graphed=graphed)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    kernels = kernel_ms(model, rows[:batch].cuda())
    return {"variant": variant, "steps_per_s": steps / seconds, "ms_per_step": 1e3 * seconds / steps,
            "kernel_ms_per_step": kernels, "first_losses": log.losses[:3], "last_loss": log.losses[-1]}


def kernel_ms(model: MambaLM, ids: torch.Tensor, runs: int = 5) -> float:
    """GPU kernel time of one eager forward + backward (no optimizer), per step."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                reply_loss(model, ids, ids).backward()
        torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    return sum(e.self_device_time_total for e in prof.key_averages()) / runs / 1e3


def main(argv=None) -> int:
    args = parse(argv)
    size = get_size(args.size)
    batch, seq_len = size.lm_train["batch_size"], size.lm_train["seq_len"]
    rows = torch.randint(0, args.vocab, (batch * 50, seq_len), generator=torch.Generator().manual_seed(0))
    results = [run(v, size.lm, rows, batch, args.steps, args.vocab) for v in VARIANTS]
    device = torch.cuda.get_device_name()
    print(f"{device}: the {args.size} LM ({size.lm}), batch {batch} x {seq_len} tokens, {args.steps} steps\n")
    print("| variant | steps/s | ms/step | kernels ms/step (fwd+bwd, eager) | losses: first 3 / last |")
    print("| --- | ---: | ---: | ---: | --- |")
    for r in results:
        first = ", ".join(f"{x:.4f}" for x in r["first_losses"])
        print(f"| {r['variant']} | {r['steps_per_s']:.1f} | {r['ms_per_step']:.1f} | {r['kernel_ms_per_step']:.1f} "
              f"| {first} / {r['last_loss']:.4f} |")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "micro_lm_step.json").write_text(json.dumps({"device": device, "results": results},
                                                                       indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
