"""The front of a decode step (``ops.step_in``: add-norm, in_proj, conv update, Mamba-1's x_proj) on the
Mamba-2.8B / Mamba2-2.7B shapes, bf16: the unfused ops (cuBLAS for several rows) beside what step_in chooses
(``measured_config``, timed on first use) and a sweep of the fused kernels' tile configs, for 1 and 16 rows.

Each figure is one call inside a captured CUDA graph of many, cycling through enough in_proj copies that none
is in L2 (as in a 64-layer decode step; ``ops/runtime/timing.py``). Prints a table, writes JSON with --out.

    python benchmarks/step_in.py [--rows 1 16] [--out step_in.json]
"""

from __future__ import annotations

import argparse
import itertools

import torch
from tables import finish

from qmamba.ops.runtime.timing import graph_us
from qmamba.ops.step_in import fused
from qmamba.ops.step_in.naive import step_in_composed, step_in_ref

SHAPES = {  # name: (d_model, in_proj rows, conv_lo, conv channels, x_proj rows or 0)
    "mamba1": (2560, 10240, 0, 5120, 192),
    "mamba2": (2560, 10576, 5120, 5376, 0),
}


def configs(m: int, has_xproj: bool):
    """One row: tiles, each with the norm inside or add_norm first and with or without in_proj's loads a
    tile ahead (x_proj after the kernel), and the default tiles with x_proj fused; several rows: the rows
    kernel's tiles on add_norm's output, with x_proj inside it and after it."""
    if m == 1:
        for bn, bk, pre, dbuf in itertools.product((8, 16), (256, 512), (False, True), (False, True)):
            yield {"block_n": bn, "block_k": bk, "num_warps": 4, "num_stages": 3, "fuse_xproj": False, "prefetch": 0,
                   "prenorm": pre, "dbuf": dbuf}
        if has_xproj:
            yield {"fuse_xproj": True}
        return
    for bn, bk, w in itertools.product((16, 32, 64, 128), (64, 128), (4, 8)):  # 10240 rows / 64: 160 programs
        yield {"block_n": bn, "block_k": bk, "num_warps": w, "num_stages": 3, "prenorm": True, "rows_kernel": True}
    if has_xproj:  # the rows kernel on add_norm's output, then x_proj (cuBLAS for several rows)
        for bn, bk in itertools.product((16, 32, 64), (64, 128, 256)):
            yield {"block_n": bn, "block_k": bk, "num_warps": 4, "num_stages": 3, "prenorm": True,
                   "rows_kernel": None, "fuse_xproj": False}


def inputs(shape: tuple, m: int, dev, dt) -> dict:
    d, n_out, conv_lo, n_conv, n_xp = shape
    g = torch.Generator(dev).manual_seed(0)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g, device=dev) * scale).to(dt)  # noqa: E731
    return {"hidden": r(m, d), "residual": torch.randn(m, d, generator=g, device=dev), "norm_weight": r(d),
            "eps": 1e-5, "in_bias": None, "conv_state": r(m, n_conv, 4), "conv_weight": r(n_conv, 4, scale=0.5),
            "conv_bias": r(n_conv), "conv_lo": conv_lo, "xproj_weight": r(n_xp, n_conv, scale=0.02) if n_xp else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev, dt = torch.device("cuda"), torch.bfloat16
    table, results = [], []
    for (name, shape), m in itertools.product(SHAPES.items(), args.rows):
        d, n_out = shape[:2]
        nbytes = n_out * d * 2
        copies = [torch.randn(n_out, d, device=dev, dtype=dt) * d ** -0.5 for _ in range(-(-400_000_000 // nbytes))]
        t = inputs(shape, m, dev, dt)
        conv0 = t["conv_state"].clone()  # the timed calls below advance t's conv state
        want = step_in_ref(**{**t, "conv_state": conv0.clone()}, in_weight=copies[0])

        def run(w, impl=fused.step_in, t=t, **cfg):
            return impl(**t, in_weight=w, **cfg)

        composed = graph_us(lambda _, w: run(w, step_in_composed), copies, None)
        default = graph_us(lambda _, w: run(w), copies, None)  # with no config: the measured choice
        chosen = fused.measured_config(**{**t, "in_weight": copies[0], "residual_in_fp32": True})
        chosen = "unfused ops" if m > 1 and chosen.get("rows_kernel") is False else chosen
        best, sweep = (float("inf"), None), []
        for cfg in configs(m, bool(shape[4])):
            try:
                got = fused.step_in(**{**t, "conv_state": conv0.clone()}, in_weight=copies[0], **cfg)
                err = max((a.float() - b.float()).abs().max().item() / (b.float().abs().max().item() + 1e-6)
                          for a, b in zip(got, want) if b is not None)
                if err > 0.05:
                    print(f"{name} m={m} {cfg}: relative error {err:.3f}, skipped")
                    continue
                us = graph_us(lambda _, w, c=cfg: run(w, **c), copies, None)
            except Exception as e:  # a config the compiler refuses (registers, shared memory)
                print(f"{name} m={m} {cfg}: {type(e).__name__}")
                continue
            print(f"{name} m={m} {cfg}: {us:.1f} us", flush=True)
            sweep.append({"us": us, **cfg})
            best = min(best, (us, cfg), key=lambda x: x[0])
        gbs = lambda us, b=nbytes: b / us / 1e3  # noqa: E731
        results.append({"shape": name, "rows": m, "composed_us": composed, "chosen_us": default, "chosen": chosen,
                        "best_us": best[0], "best_config": best[1], "sweep": sweep})
        table.append(f"| {name} | {m} | {composed:.1f} ({gbs(composed):.0f}) | {default:.1f} ({gbs(default):.0f}) "
                     f"| {chosen} | {best[0]:.1f} ({gbs(best[0]):.0f}) | {best[1]} |")
        del copies
        torch.cuda.empty_cache()
    finish("bf16; us per step_in (GB/s of in_proj read)",
           ["shape", "rows", "unfused ops", "as chosen", "chosen", "fused, best of sweep", "best config"], table,
           results, args.out)


if __name__ == "__main__":
    main()
