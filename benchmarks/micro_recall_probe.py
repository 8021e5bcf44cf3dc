"""How many training steps a micro Mamba LM needs to carry one bit over a gap of N tokens, in qmamba and, on the
same initial weights, in mamba_ssm (when installed): the skill the micro LMs need to answer from a scene given in
words, measured apart from the world, and a check of the training path against mamba_ssm's.

    python benchmarks/micro_recall_probe.py --gaps 0,8,32,128 --steps 3000 --out runs/recall-probe

Each row of ``--batch`` holds ``--len`` random tokens from [2, vocab) and, ``gap`` tokens before the last one,
a key token 0 or 1; the model is trained (AdamW, from the ``micro-mamba`` preset at ``--d-model`` x ``--n-layer``)
to give the key at the last position, read as a choice between the logits of tokens 0 and 1. Every ``--eval-every``
steps, accuracy on 512 fixed rows; the table gives the first step at which it reaches 95% (the gap within the
convolutions' reach, a few tokens per layer, is learned at once; a longer one only once the scan carries it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from qmamba import MambaLM
from qmamba.models.presets import LLM_PRESETS


@dataclasses.dataclass
class Probe:
    gap: int
    length: int = 160
    vocab: int = 64
    batch: int = 32
    steps: int = 2000
    lr: float = 3e-3
    eval_every: int = 50
    target: float = 0.95


def rows(probe: Probe, n: int, g: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (n, length), keys (n,)): random tokens with the key ``gap`` tokens before the last position."""
    ids = torch.randint(2, probe.vocab, (n, probe.length), generator=g)
    keys = torch.randint(0, 2, (n,), generator=g)
    ids[:, probe.length - 1 - probe.gap] = keys
    return ids.to(device), keys.to(device)


def key_loss(logits_of, ids: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the key between tokens 0 and 1 at the last position, and the hits."""
    with torch.autocast(ids.device.type, torch.bfloat16, enabled=ids.device.type == "cuda"):
        last = logits_of(ids)[:, -1, :2].float()  # (b, 2)
    return F.cross_entropy(last, keys), last.argmax(-1) == keys


def train(logits_of, params, probe: Probe, device, seed: int = 0) -> dict:
    """Train on fresh rows each step; returns the first step at 95% held-out accuracy (None: never) and more."""
    g = torch.Generator().manual_seed(seed)
    held = rows(probe, 512, torch.Generator().manual_seed(seed + 1), device)
    opt = torch.optim.AdamW(params, lr=probe.lr, weight_decay=0.1, betas=(0.9, 0.95))
    reached, acc, loss = None, 0.0, float("nan")
    start = time.perf_counter()
    for step in range(1, probe.steps + 1):
        loss_t, _ = key_loss(logits_of, *rows(probe, probe.batch, g, device))
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % probe.eval_every == 0 or step == probe.steps:
            with torch.no_grad():
                _, hits = key_loss(logits_of, *held)
            acc, loss = hits.float().mean().item(), loss_t.item()
            if acc >= probe.target and reached is None:
                reached = step
                break
    return {"gap": probe.gap, "steps_to_target": reached, "accuracy": acc, "loss": loss, "steps_run": step,
            "seconds_per_step": (time.perf_counter() - start) / step}


def models(d_model: int, n_layer: int, d_state: int, device, impls: list[str]) -> dict:
    """{impl: (logits_of, parameters)}, every impl from the same initial weights (qmamba's, saved and loaded)."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(LLM_PRESETS["micro-mamba"](), vocab_size=64, d_model=d_model, n_layer=n_layer,
                              ssm_cfg={"d_state": d_state})
    ours = MambaLM(cfg, device=device)
    out = {"qmamba": (lambda ids: ours(ids).logits, list(ours.parameters()))}
    if "mamba_ssm" in impls:
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

        with tempfile.TemporaryDirectory() as tmp:
            ours.save_pretrained(tmp, dtype=torch.float32, safe_serialization=False)  # what mamba_ssm reads
            ref = MambaLMHeadModel.from_pretrained(tmp, device=device)
        out["mamba_ssm"] = (lambda ids: ref(ids).logits, list(ref.parameters()))
    return {k: v for k, v in out.items() if k in impls}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gaps", default="0,8,32,128")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--len", type=int, default=160, dest="length")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--d-model", type=int, default=192)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--impls", default=None, help="qmamba,mamba_ssm (default: mamba_ssm too when installed)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="a folder for recall_probe.json")
    args = p.parse_args(argv)
    impls = args.impls.split(",") if args.impls else ["qmamba"] + (["mamba_ssm"] if _has_mamba_ssm() else [])
    results = []
    print("| impl | gap | steps to 95% | accuracy | loss | ms / step |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for gap in (int(x) for x in args.gaps.split(",")):
        probe = Probe(gap, args.length, batch=args.batch, steps=args.steps, lr=args.lr)
        for impl, (logits_of, params) in models(args.d_model, args.n_layer, args.d_state, args.device, impls).items():
            r = {"impl": impl, **train(logits_of, params, probe, args.device)}
            results.append(r)
            reached = r["steps_to_target"] if r["steps_to_target"] else f"> {r['steps_run']}"
            print(f"| {impl} | {gap} | {reached} | {100 * r['accuracy']:.1f} | {r['loss']:.3f} | "
                  f"{1000 * r['seconds_per_step']:.1f} |", flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        record = {"args": vars(args), "device": _device_name(args.device), "results": results}
        (Path(args.out) / "recall_probe.json").write_text(json.dumps(record, indent=2))


def _has_mamba_ssm() -> bool:
    try:
        import mamba_ssm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"


if __name__ == "__main__":
    main()
