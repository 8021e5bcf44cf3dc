"""The Q-Mamba projector (the whole connector: VL-Mamba preprocessing, the query blocks, the output projection)
of a full-size preset with random weights, its local cross-attention run each way (--paths) in one process:

    reference  k and v of every patch, SDPA over the (q, p) scores with the dense local mask (the path before
               the absorbed op; ``ops.local_attention.naive``)
    absorbed   k_proj and v_proj absorbed into the queries and outputs (``ops.local_attention.absorbed``)
    fused      the absorbed forward as one Triton kernel, the absorbed gradients recomputed
               (``ops.local_attention.fused``)

Forward at each of --batches (inference mode; eager, and replayed from a CUDA graph), and forward + backward
(loss = <output, fixed random gradient>, gradients of every parameter; eager, and captured with
``train.graphed_step.CapturedTrainStep``) at --train-batch with its peak memory. bf16 on a GPU (fp32 on CPU);
median of --repeats timed calls (``ops.runtime.timing.time_ms``: CUDA events). Prints a markdown table and
the max |difference| between each path's output and the reference's at each batch; then the same figures for one
block's local attention alone (``ops.local_attention`` on the first block's weights, from the projected queries to the
output before out_proj), which isolates the op from the rest of the block. Builds the connector alone from the
preset's config (``qmamba bench``'s ``preset_config``), without the vision tower or the LM; needs only torch,
triton and transformers (Pillow stand-ins where it is missing).

    python benchmarks/projector.py [--preset qmamba-128] [--repeats 20] [--out projector.json]
    python benchmarks/projector.py --device cpu --tiny --batches 1 4 --train-batch 4   # a smoke test
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import types

import torch


def _without_pillow() -> None:
    """The vision configs name PIL's resampling filters at import; the projector reads no image, so where
    Pillow is not installed (a GPU machine with torch, triton and transformers alone) stand-ins are enough."""
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        image = types.ModuleType("PIL.Image")
        image.Resampling = enum.IntEnum("Resampling", "NEAREST LANCZOS BILINEAR BICUBIC BOX HAMMING", start=0)
        image.Image = type("Image", (), {})
        sys.modules.update({"PIL": types.ModuleType("PIL"), "PIL.Image": image})
        sys.modules["PIL"].Image = image


_without_pillow()

from qmamba.bench.multimodal import preset_config  # noqa: E402
from qmamba.bench.options import BenchOptions  # noqa: E402
from qmamba.infer.cuda_graph import Captured  # noqa: E402
from qmamba.models.connectors import build_connector  # noqa: E402
from qmamba.models.vision import hf_vision_config  # noqa: E402
from qmamba.ops import local_attention, use_local_attention  # noqa: E402
from qmamba.ops.runtime.timing import peak_gib, time_ms  # noqa: E402
from qmamba.train.graphed_step import CapturedTrainStep  # noqa: E402

PATHS = {"reference": "naive", "absorbed": "absorbed", "fused": "fused"}  # table row -> ops.local_attention algorithm


def build(preset: str, tiny: bool, device: torch.device, dtype: torch.dtype, seed: int):
    """The preset's connector with random weights, and the (patches, d_vision) of its vision features."""
    cfg = preset_config(preset, BenchOptions(tiny=tiny, seed=seed))
    d_vision = sum(hf_vision_config(c).hidden_size for c in cfg.vision.hf_configs)
    torch.manual_seed(seed)
    conn = build_connector(cfg.connector, d_vision, cfg.llm.d_model, device=device, dtype=dtype).eval()
    return conn, cfg.vision.num_patches, d_vision


class OpAlone(torch.nn.Module):
    """One block's local attention alone on fixed random queries: features (b, p, d_kv) -> (b, q, width),
    before out_proj (batches up to ``max_batch``)."""

    def __init__(self, conn, max_batch: int):
        super().__init__()
        self.xattn = conn.blocks[0].xattn
        w = self.xattn.q_proj.weight
        self.register_buffer("x_q", torch.randn(max_batch, conn.cfg.n_queries, w.shape[1], device=w.device,
                                                dtype=w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.xattn
        return local_attention(a.q_proj(self.x_q[: x.shape[0]]), x, a.k_proj.weight, a.k_proj.bias,
                               a.v_proj.weight, a.v_proj.bias, a.n_heads)  # (b, q, width)


def forward_figures(model, x: torch.Tensor, algorithm: str, graphs: bool, args) -> dict:
    """Eager and captured forward times of one batch, and the output."""
    device = x.device
    with use_local_attention(algorithm), torch.inference_mode():
        out = {"eager_ms": time_ms(lambda: model(x), device, args.warmup, args.repeats)}
        if graphs:
            captured = Captured(lambda: model(x), True, args.warmup)
            out["graph_ms"] = time_ms(captured, device, args.warmup, args.repeats)
        out["y"] = model(x).clone()
    return out


def train_figures(model, x: torch.Tensor, algorithm: str, graphs: bool, args) -> dict:
    """Forward + backward times (eager, captured) and the eager step's peak memory (GiB, GPU only). The
    features take a gradient for the op alone (in the projector they come from the trainable preprocessing)."""
    device, params = x.device, list(model.parameters())
    x = x.detach().requires_grad_(isinstance(model, OpAlone))
    with torch.no_grad():
        grad = torch.randn_like(model(x))

    def loss():
        return (model(x).float() * grad).sum()

    def step():
        model.zero_grad(set_to_none=True)
        loss().backward()

    with use_local_attention(algorithm):
        out = {"train_ms": time_ms(step, device, args.warmup, args.repeats), "train_peak_gib": peak_gib(step, device)}
        if graphs:
            captured = CapturedTrainStep(loss, params, args.warmup)
            out["train_graph_ms"] = time_ms(captured, device, args.warmup, args.repeats)
            del captured
    model.zero_grad(set_to_none=True)
    return out


def cell(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def table(results: dict, batches: list[int], train_batch: int) -> list[str]:
    """Markdown lines: one row per path, then the reference / path ratio of every other path."""
    cols = [f"b{b} {kind}" for b in batches for kind in ("eager", "graph")]
    cols += [f"b{train_batch} fwd+bwd eager", f"b{train_batch} fwd+bwd graph", f"b{train_batch} fwd+bwd peak GiB"]
    keys = [(f"b{b}", k) for b in batches for k in ("eager_ms", "graph_ms")]
    keys += [("train", "train_ms"), ("train", "train_graph_ms"), ("train", "train_peak_gib")]
    lines = ["| path | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for path in results:
        lines.append(f"| {path} | " + " | ".join(cell(results[path][b].get(k)) for b, k in keys) + " |")
    for path in [p for p in results if p != "reference"]:
        ratio = [results["reference"][b].get(k) / results[path][b][k] if results[path][b].get(k) else None
                 for b, k in keys]
        lines.append(f"| reference / {path} | " + " | ".join("-" if r is None else f"{r:.2f}x" for r in ratio) + " |")
    return lines


def measure(model, p: int, d_in: int, dtype: torch.dtype, graphs: bool, args) -> tuple[dict, dict]:
    """Every figure of ``model`` on features (b, p, d_in) with each path, and the outputs' max differences."""
    device = next(model.parameters()).device
    results: dict = {path: {} for path in args.paths}
    diffs = {}
    for b in [*args.batches, "train"]:
        n = args.train_batch if b == "train" else b
        x = torch.randn(n, p, d_in, device=device, generator=torch.Generator(device).manual_seed(n)).to(dtype)
        key = "train" if b == "train" else f"b{b}"
        for path in args.paths:
            algorithm = PATHS[path]
            fn = train_figures if b == "train" else forward_figures
            results[path][key] = fn(model, x, algorithm, graphs, args)
            print(f"[projector] {type(model).__name__} {path} {key}: " + ", ".join(
                f"{k} {cell(v)}" for k, v in results[path][key].items() if k != "y"), flush=True)
        if b != "train":
            ys = {path: results[path][key].pop("y").float() for path in args.paths}
            diffs[key] = {path: {"max_abs_diff": (ys["reference"] - y).abs().max().item(),
                                 "max_abs": ys["reference"].abs().max().item()} for path, y in ys.items()
                          if path != "reference"}
    return results, diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="qmamba-128")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the preset's tiny twin (CPU smoke test)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS),
                    help="local attention paths to run (reference first; default all)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.paths = ["reference", *[p for p in args.paths if p != "reference"]]
    device = torch.device(args.device)
    graphs = device.type == "cuda"
    dtype = torch.bfloat16 if graphs else torch.float32
    conn, p, d_vision = build(args.preset, args.tiny, device, dtype, args.seed)
    results, diffs = measure(conn, p, d_vision, dtype, graphs, args)
    x_kv = conn.blocks[0].xattn.k_proj.in_features
    op = OpAlone(conn, max(*args.batches, args.train_batch))
    op_results, op_diffs = measure(op, p, x_kv, dtype, graphs, args)
    name = torch.cuda.get_device_name(device) if graphs else "CPU"
    print(f"\n{name}, {args.preset}{' (tiny)' if args.tiny else ''}, {str(dtype).removeprefix('torch.')}, "
          f"{conn.cfg.n_queries} queries x {p} patches, {conn.cfg.n_layer} blocks; ms (median of {args.repeats})\n")
    for what, res, dif in (("projector", results, diffs), ("one block's local attention alone", op_results, op_diffs)):
        print(f"{what}:\n")
        print("\n".join(table(res, args.batches, args.train_batch)))
        for b, per_path in dif.items():
            for path, d in per_path.items():
                print(f"{b}: max |reference - {path}| = {d['max_abs_diff']:.3g} (max |output| {d['max_abs']:.3g})")
        print()
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": name, "preset": args.preset, "projector": results, "projector_diffs": diffs,
                       "op": op_results, "op_diffs": op_diffs}, f, indent=1)


if __name__ == "__main__":
    main()
