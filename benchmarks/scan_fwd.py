"""Mamba-1 selective scan forward without gradients: the chunk-parallel kernels beside the sequential one
(``ops/selective_scan/fused_recurrent.py``) over a sweep of block sizes,
with each position's loads in order or issued a position ahead, on the shapes of a prefill
(inputs laid out as the Mamba-1 layer passes them), bf16, n = 16. Prints a table and the programs
(rows x channel blocks) from which the sequential kernel won; writes JSON with --out.

    python benchmarks/scan_fwd.py [--out scan_fwd.json]
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
import triton

from qmamba.ops.runtime.timing import wall_ms as ms
from qmamba.ops.selective_scan import fused_recurrent as seq
from qmamba.ops.selective_scan.chunk import selective_scan_triton

SHAPES = [  # (rows, channels, positions): LM prefills at 2.8B, the Q-Mamba projector's layers at batch 64
    (1, 5120, 800), (4, 5120, 800), (16, 5120, 168), (64, 5120, 168), (64, 5120, 809), (64, 1536, 128),
    (8, 1536, 128),
]


def inputs(b: int, d: int, l: int, n: int = 16, dev="cuda", dt=torch.bfloat16) -> dict:
    xz = torch.randn(2 * d, b * l, device=dev, dtype=dt)  # in_proj of all rows: x and z views (l, b l, 1)
    x_dbl = torch.randn(b, 160 + 2 * n, l, device=dev, dtype=dt)  # x_proj per row: dt_low, B, C
    return {"u": torch.randn(b, d, l, device=dev, dtype=dt), "delta": torch.randn(b, d, l, device=dev, dtype=dt),
            "A": -torch.rand(d, n, device=dev) * 4 - 0.1, "B": x_dbl[:, 160:160 + n], "C": x_dbl[:, 160 + n:],
            "D": torch.randn(d, device=dev), "z": xz.view(2 * d, b, l).transpose(0, 1)[:, d:],
            "delta_bias": torch.randn(d, device=dev) * 0.3}


@torch.inference_mode()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows, results = [], []
    for b, d, l in SHAPES:
        t = inputs(b, d, l)
        chunked = ms(lambda t=t: selective_scan_triton(**t, delta_softplus=True, return_last_state=True))
        want, _ = selective_scan_triton(**t, delta_softplus=True, return_last_state=True)
        operands = (t["u"], t["delta"], t["A"], t["B"].unsqueeze(1), t["C"].unsqueeze(1), t["D"], t["z"],
                    t["delta_bias"], None, True)
        best = (float("inf"), None)  # (ms, (block_d, warps, ahead))
        for (bd, w), ahead in itertools.product([(16, 1), (32, 1), (64, 2)], (False, True)):
            def run(bd=bd, w=w, ahead=ahead, operands=operands):
                return seq.scan_sequential(*operands, block_d=bd, num_warps=w, ahead=ahead)
            try:
                err = (run()[0].float() - want.float()).abs().max().item()
                if err > 0.05 * want.float().abs().max().item():
                    print(f"{(b, d, l)} block_d {bd} warps {w} ahead {ahead}: error {err:.3g}, skipped")
                    continue
                best = min(best, (ms(run), (bd, w, ahead)), key=lambda x: x[0])
            except Exception as e:  # registers, shared memory
                print(f"{(b, d, l)} block_d {bd} warps {w} ahead {ahead}: {type(e).__name__}")
        programs = b * triton.cdiv(d, seq.BLOCK_D)
        results.append({"shape": [b, d, l], "programs": programs, "chunked_ms": chunked,
                        "sequential_ms": best[0], "best": best[1]})
        rows.append(f"| {b} x {d} x {l} | {programs} | {chunked:.3f} | {best[0]:.3f} {best[1]} "
                    f"| {chunked / best[0]:.2f}x |")
        print(rows[-1], flush=True)
    print(f"\n{torch.cuda.get_device_name()}, bf16, n = 16, no gradients; ms per scan\n")
    print("| rows x channels x positions | programs (block 16) | chunked | sequential: best "
          "(block_d, warps, ahead) | speed-up |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    wins = [r["programs"] for r in results if r["sequential_ms"] < r["chunked_ms"]]
    print(f"\nsequential won from {min(wins)} programs" if wins else "\nsequential never won")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
