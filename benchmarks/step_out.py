"""The back of a Mamba-2 decode step (``ops.step_out``: the gated RMSNorm and out_proj) on the Mamba2-2.7B shape,
bf16, one row: the unfused ops (rms_norm_gated, then gemv as it chooses) beside the fused kernel with each of
its tiles and what step_out chooses (measured on first use). Several rows always run the unfused ops.

Each figure is one call inside a captured CUDA graph of many, cycling through enough out_proj copies that none
is in L2 (as in a 64-layer decode step; ``ops/runtime/timing.py``). Prints a table, writes JSON with --out.

    python benchmarks/step_out.py [--out step_out.json]
"""

from __future__ import annotations

import argparse

import torch
from tables import finish

from qmamba.ops.runtime.timing import graph_us, weight_copies
from qmamba.ops.step_out import fused
from qmamba.ops.step_out.naive import step_out_composed, step_out_ref

SHAPES = {"mamba2": (5120, 2560)}  # name: (d_ssm, d_model)


def measure(name: str, k: int, n: int, device: str = "cuda") -> tuple[dict, str]:
    """The figures of one shape and its table row."""
    dev, dt = torch.device(device), torch.bfloat16
    g = torch.Generator(dev).manual_seed(0)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g, device=dev) * scale).to(dt)  # noqa: E731
    y, z, nw, w = r(1, k), r(1, k), 1 + r(k, scale=0.1), r(n, k, scale=k**-0.5)
    copies = weight_copies(w)
    want = step_out_ref(y.float(), z.float(), nw.float(), 1e-5, w.float())
    row = {"shape": name, "sweep": {},
           "unfused_us": graph_us(lambda _, w_: step_out_composed(y, z, nw, 1e-5, w_), copies, None)}
    for tiles in fused.TILES:
        err = (fused.step_out(y, z, nw, 1e-5, w, config=tiles).float() - want).abs().max().item()
        assert err <= 2e-2 * want.abs().max().item(), f"{tiles}: error {err}"
        us = graph_us(lambda _, w_, t=tiles: fused.step_out(y, z, nw, 1e-5, w_, config=t), copies, None)
        row["sweep"][str(tiles)] = us
        print(f"{name} {tiles}: {us:.1f} us", flush=True)
    row["chosen"] = fused.choose(y, z, nw, 1e-5, w, None)
    row["chosen_us"] = graph_us(lambda _, w_: fused.step_out(y, z, nw, 1e-5, w_), copies, None)
    best = min(row["sweep"], key=row["sweep"].get)
    cell = lambda us: f"{us:.1f} ({n * k * 2 / us / 1e3:.0f})"  # noqa: E731
    line = (f"| {name} | {cell(row['unfused_us'])} | {cell(row['sweep'][best])} {best} | "
            f"{cell(row['chosen_us'])} {row['chosen'] or 'unfused ops'} |")
    return row, line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    measured = [measure(name, k, n) for name, (k, n) in SHAPES.items()]
    finish("bf16; us per step_out (GB/s of out_proj read)",
           ["shape", "unfused ops", "fused, best tiles", "as chosen"], [m[1] for m in measured],
           [m[0] for m in measured], args.out)


if __name__ == "__main__":
    main()
