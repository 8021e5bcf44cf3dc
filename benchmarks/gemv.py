"""The decode step's matrix-vector products: Triton ``gemv`` (as it chooses, and a sweep of tile configs) beside
cuBLAS (``F.linear``) on the Mamba-2.8B / Mamba2-2.7B weight shapes, bf16, 1 and 16 rows.

Each figure is the time of one product inside a captured CUDA graph of many, cycling through enough weight
copies that none is in L2 (as in a 64-layer decode step). Prints a table, writes JSON with --out.

    python benchmarks/gemv.py [--quick] [--out gemv.json]
"""

from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F
from tables import finish

from qmamba.ops.gemv.tiled import candidates, choose, gemv
from qmamba.ops.runtime.timing import graph_us

SHAPES = {  # name: (n, k)
    "in_proj (mamba1)": (10240, 2560),
    "in_proj (mamba2)": (10576, 2560),
    "out_proj": (2560, 5120),
    "x_proj (mamba1)": (192, 5120),
    "lm_head": (50280, 2560),
}


def configs(m: int, n: int, k: int, quick: bool):
    """One row: a grid of tiles, each plain, register double-buffered (dbuf) and prefetching 2 or 8 tiles
    ahead into L2, plus the split-k candidates gemv measures itself; several rows: a grid of tensor-core
    tiles, each with and without prefetch, swapped tiles (weight on the dot's M side) with k split 1 to 8 ways,
    and the split-k rows candidates. --quick: 4 warps, 3 stages only."""
    ahead = ({"prefetch": 0, "dbuf": False}, {"prefetch": 0, "dbuf": True}, {"prefetch": 2}, {"prefetch": 8})
    if m == 1:
        for bn, bk, pf in itertools.product((4, 8, 16), (256, 512, 1024), ahead):
            for w in (4,) if quick or bk < 1024 else (4, 8):
                yield {"block_n": bn, "block_k": bk, "num_warps": w, "num_stages": 1, **pf}
        yield from (cfg for cfg in candidates(n, k) if "split_k" in cfg)
        return
    warps, stages = ((4, 8), (3, 4)) if not quick else ((4,), (3,))
    for bn, bk, w, s, pf in itertools.product((16, 32, 64), (64, 128, 256), warps, stages, (0, 4)):
        yield {"block_n": bn, "block_k": bk, "num_warps": w, "num_stages": s, "prefetch": pf}
    for bn, bk, s, sk in itertools.product((64, 128), (64, 128), stages, (1, 2, 4, 8)):  # the weight on the M side
        yield {"block_n": bn, "block_k": bk, "num_warps": 4, "num_stages": s, "swap": True, "split_k": sk}
    yield from (cfg for cfg in candidates(n, k, m) if "split_k" in cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), help="parts of names in SHAPES (mamba1: both)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev, dt = torch.device("cuda"), torch.bfloat16
    rows, results = [], []
    shapes = {name: nk for name, nk in SHAPES.items() if any(p in name for p in args.shapes)}
    for (name, (n, k)), m in itertools.product(shapes.items(), args.rows):
        nbytes = n * k * 2
        copies = [torch.randn(n, k, device=dev, dtype=dt) for _ in range(max(4, -(-400_000_000 // nbytes)))]
        x = torch.randn(m, k, device=dev, dtype=dt)
        want = F.linear(x, copies[0]).float()
        cublas = graph_us(lambda x, w: F.linear(x, w), copies, x)
        chosen_cfg = choose(x, copies[0], None)  # what gemv measured and picked (None: cuBLAS)
        default = graph_us(lambda x, w: gemv(x, w), copies, x)
        timed = []  # (us, config)
        for cfg in configs(m, n, k, args.quick):
            try:
                err = (gemv(x, copies[0], config=cfg).float() - want).abs().max().item()
                if err > 0.05 * want.abs().max().item():
                    continue
                timed.append((graph_us(lambda x, w, c=cfg: gemv(x, w, config=c), copies, x), cfg))
            except Exception as e:  # a config the compiler refuses (registers, shared memory)
                print(f"{name} m={m} {cfg}: {type(e).__name__}")
        timed.sort(key=lambda t: t[0])
        for us, cfg in timed[:8]:
            print(f"  {name} m={m}: {us:.1f} us {cfg}")
        best = timed[0] if timed else (float("inf"), None)
        gbs = lambda us, b=nbytes: b / us / 1e3  # noqa: E731
        results.append({"shape": name, "n": n, "k": k, "rows": m, "cublas_us": cublas, "chosen_us": default,
                        "chosen_config": chosen_cfg, "best_us": best[0], "best_config": best[1],
                        "sweep": [{"us": us, **cfg} for us, cfg in timed]})
        rows.append(f"| {name} {n}x{k} | {m} | {cublas:.1f} ({gbs(cublas):.0f}) | {default:.1f} ({gbs(default):.0f}) "
                    f"| {best[0]:.1f} ({gbs(best[0]):.0f}) | {best[1]} | {chosen_cfg or 'cuBLAS'} |")
        print(rows[-1], flush=True)
        del copies
        torch.cuda.empty_cache()
    finish("bf16; us per product (GB/s of weights read)",
           ["weight", "rows", "cuBLAS", "gemv as chosen", "gemv best of sweep", "best config", "chosen"], rows,
           results, args.out)


if __name__ == "__main__":
    main()
