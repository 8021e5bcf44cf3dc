"""The local cross-attention of one Q-Mamba block (``ops.local_attention``) at a full-size preset's shapes: the
dense-mask reference, the absorbed algorithm and the fused kernel at every (queries, features, warps) tile of the
sweep, forward, bf16, at batch 1 and 64. Each figure is one call replayed from a CUDA graph of many calls (as the
projector runs graphed), in microseconds. Prints a table and each batch's fastest tile; JSON with --out.

    python benchmarks/local_attention_tiles.py [--preset qmamba-128] [--out local_attention_tiles.json]
    TRITON_INTERPRET=1 python benchmarks/local_attention_tiles.py --tiny   # CPU smoke test (interpreter, wall clock)
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from qmamba.ops.local_attention import local_attention_absorbed, local_attention_naive
from qmamba.ops.local_attention.fused import fused_forward
from qmamba.ops.runtime.timing import graph_us

TILES = list(itertools.product((16, 32, 64), (32, 64, 128), (4, 8)))  # (block_q, block_k, num_warps)


def shapes(preset: str, tiny: bool) -> dict:
    """Queries, patches, width, heads and feature width of the preset's query blocks (read off its connector
    built on the meta device: no weights)."""
    if tiny:
        return {"q": 16, "p": 50, "d": 32, "heads": 2, "d_kv": 48}
    from qmamba.bench.multimodal import preset_config
    from qmamba.bench.options import BenchOptions
    from qmamba.models.connectors import build_connector
    from qmamba.models.vision import hf_vision_config

    cfg = preset_config(preset, BenchOptions(tiny=False))
    d_vision = sum(hf_vision_config(c).hidden_size for c in cfg.vision.hf_configs)
    conn = build_connector(cfg.connector, d_vision, cfg.llm.d_model, device="meta")
    xattn = conn.blocks[0].xattn
    return {"q": conn.cfg.n_queries, "p": cfg.vision.num_patches, "d": xattn.q_proj.in_features,
            "heads": xattn.n_heads, "d_kv": xattn.k_proj.in_features}


def inputs(b: int, s: dict, device, dtype) -> tuple:
    g = torch.Generator(device).manual_seed(b)
    r = lambda *shape, scale=1.0: (torch.randn(*shape, generator=g, device=device) * scale).to(dtype)  # noqa: E731
    d, d_kv = s["d"], s["d_kv"]
    return (r(b, s["q"], d), r(b, s["p"], d_kv), r(d, d_kv, scale=d_kv**-0.5), r(d), r(d, d_kv, scale=d_kv**-0.5),
            r(d))


def timed_us(fn, device, reps: int = 20) -> float:
    """Microseconds of one ``fn()``: replayed from a CUDA graph of ``reps`` calls (``timing.graph_us``), or wall
    clock on a CPU."""
    if device.type == "cuda":
        return graph_us(lambda x, w: fn(), [None], None, reps)
    fn()
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e6


def measure_batch(b: int, s: dict, tiles: list, device, dtype) -> dict[str, float]:
    """Microseconds of each path at batch ``b``; a fused tile whose output strays from the dense path's stops
    the run."""
    x = inputs(b, s, device, dtype)
    q, kv, wk, _, wv, bv = x
    h = s["heads"]
    want = local_attention_naive(*x, h).float()
    out = {"dense mask": timed_us(lambda: local_attention_naive(*x, h), device),
           "absorbed": timed_us(lambda: local_attention_absorbed(*x, h), device)}
    for bq, bk, warps in tiles:
        def run(bq=bq, bk=bk, warps=warps):
            return fused_forward(q, kv, wk, wv, bv, h, block_q=bq, block_k=bk, num_warps=warps)
        err = (run().float() - want).abs().max().item() / want.abs().max().item()
        if err > 3e-2:
            raise SystemExit(f"fused {bq}x{bk}x{warps} at batch {b}: relative error {err:.3g}")
        out[f"fused q{bq} k{bk} w{warps}"] = timed_us(run, device)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="qmamba-128")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--tiny", action="store_true", help="toy shapes on the CPU (with TRITON_INTERPRET=1)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    device = torch.device("cpu" if args.tiny else "cuda")
    dtype = torch.float32 if args.tiny else torch.bfloat16
    s = shapes(args.preset, args.tiny)
    tiles = TILES[:2] if args.tiny else TILES
    rows: dict[str, dict[int, float]] = {}
    with torch.inference_mode():
        for b in args.batches:
            for path, us in measure_batch(b, s, tiles, device, dtype).items():
                rows.setdefault(path, {})[b] = us
            print(f"[tiles] batch {b} done", flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (interpreter)"
    print(f"\n{name}, {args.preset}{' (tiny)' if args.tiny else ''}: {s['q']} queries x {s['p']} patches, width "
          f"{s['d']}, {s['heads']} heads, features {s['d_kv']}; us per call\n")
    print("| path | " + " | ".join(f"b{b}" for b in args.batches) + " |\n|---|" + "---|" * len(args.batches))
    for path, by_batch in rows.items():
        print(f"| {path} | " + " | ".join(f"{by_batch[b]:.1f}" for b in args.batches) + " |")
    for b in args.batches:
        fused = {k: v[b] for k, v in rows.items() if k.startswith("fused")}
        best = min(fused, key=fused.get)
        print(f"b{b}: fastest {best} {fused[best]:.1f} us; dense mask {rows['dense mask'][b]:.1f} us")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": name, "preset": args.preset, "shapes": s, "us": rows}, f, indent=1)


if __name__ == "__main__":
    main()
