"""Mamba-1's decode step after x_proj (``ops.state_update.mamba1_decode_ssm``: dt_proj, softplus, the state
update, D and the gate) on the Mamba-2.8B shape (d_inner 5120, d_state 16, dt_rank 160), bf16 with an fp32
state: the one-row kernel, the rows kernel as configured and a sweep of its tiles, and mamba_ssm's step
(dt_proj by cuBLAS, then its ``selective_state_update``; A = -exp(A_log) computed once, not every step as
mamba_ssm's layer does) when installed.

Each figure is one call inside a captured CUDA graph of many, cycling through enough state copies that none
is in L2 (as in a 64-layer decode step; ``ops/runtime/timing.py``). Prints a table, writes JSON with --out.

    python benchmarks/decode_ssm.py [--batch 1 2 4 8 16 64] [--out decode_ssm.json]
"""

from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F
from tables import finish

from qmamba.bench.peers import peer_available
from qmamba.ops.runtime.timing import graph_us
from qmamba.ops.state_update.mamba1_step import decode_config, mamba1_decode_ssm, rows_config
from qmamba.ops.state_update.naive import mamba1_decode_ssm_ref

D_INNER, D_STATE, DT_RANK = 5120, 16, 160


def inputs(b: int, dev="cuda", dt=torch.bfloat16) -> dict:
    g = torch.Generator(dev).manual_seed(0)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g, device=dev) * scale).to(dt)  # noqa: E731
    x_dbl = r(b, DT_RANK + 2 * D_STATE)  # x_proj's output: dt_low, B, C are views of it
    dt_low, B, C = x_dbl.split([DT_RANK, D_STATE, D_STATE], dim=-1)
    return {"x": r(b, D_INNER), "dt_low": dt_low, "dt_weight": r(D_INNER, DT_RANK, scale=DT_RANK**-0.5),
            "dt_bias": (torch.rand(D_INNER, generator=g, device=dev) - 4.0).to(dt),
            "A_log": torch.log(torch.arange(1, D_STATE + 1, device=dev, dtype=torch.float32)).repeat(D_INNER, 1),
            "B": B, "C": C, "D": r(D_INNER), "z": r(b, D_INNER)}


def rows_sweep():
    for bd, warps, br in itertools.product((16, 32), (4, 8), (64, 256)):
        yield {"BLOCK_M": 16, "BLOCK_D": bd, "BLOCK_N": D_STATE, "BLOCK_R": br, "ONE_TILE": br >= DT_RANK,
               "num_warps": warps}


def measure(b: int, peer) -> dict:
    """The figures of one batch size (us per layer)."""
    t = inputs(b)
    state_bytes = b * D_INNER * D_STATE * 4
    count = max(4, -(-150_000_000 // state_bytes))  # past L2
    copies = [torch.randn(b, D_INNER, D_STATE, device=t["x"].device) for _ in range(count)]
    start = copies[0].clone()  # the timed launches advance the copies in place
    want_state = start.clone()
    want = mamba1_decode_ssm_ref(want_state, **t).float()

    def timed(cfg):
        s = start.clone()
        err = (mamba1_decode_ssm(s, **t, config=cfg).float() - want).abs().max().item()
        if err > 0.05 * want.abs().max().item() or not torch.allclose(s, want_state, rtol=1e-2, atol=1e-2):
            print(f"b={b} {cfg}: error {err:.3g}, skipped")
            return float("inf")
        return graph_us(lambda _, state: mamba1_decode_ssm(state, **t, config=cfg), copies, None)

    out = {"batch": b, "state_mb": 2 * state_bytes / 1e6,
           "one_row_us": timed(decode_config(b, D_INNER, D_STATE, DT_RANK)),
           "default_us": graph_us(lambda _, state: mamba1_decode_ssm(state, **t), copies, None),
           "rows_config": rows_config(b, D_INNER, D_STATE, DT_RANK), "mamba_ssm_us": float("nan")}
    sweep = []
    for cfg in rows_sweep():
        try:
            sweep.append({"us": timed(cfg), **cfg})
        except Exception as e:  # registers, shared memory
            print(f"b={b} {cfg}: {type(e).__name__}")
    out["sweep"] = sorted(sweep, key=lambda v: v["us"])
    if peer is not None:
        A = -torch.exp(t["A_log"])

        def peer_step(_, state):
            dt = F.linear(t["dt_low"], t["dt_weight"])
            return peer(state, t["x"], dt, A, t["B"], t["C"], D=t["D"], z=t["z"], dt_bias=t["dt_bias"],
                        dt_softplus=True)
        out["mamba_ssm_us"] = graph_us(peer_step, copies, None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    peer = None
    if peer_available("mamba_ssm"):
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update as peer
    rows, results = [], []
    for b in args.batch:
        r = measure(b, peer)
        results.append(r)
        for v in r["sweep"][:4]:
            print(f"  b={b}: {v['us']:.1f} us {v}")
        best = r["sweep"][0] if r["sweep"] else {"us": float("inf"), "BLOCK_D": "-", "num_warps": "-", "BLOCK_R": "-"}
        rows.append(f"| {b} | {r['state_mb']:.1f} | {r['one_row_us']:.1f} | {r['default_us']:.1f} | {best['us']:.1f} "
                    f"({best['BLOCK_D']}, {best['num_warps']}, {best['BLOCK_R']}) | {r['mamba_ssm_us']:.1f} |")
        print(rows[-1], flush=True)
        torch.cuda.empty_cache()
    finish("Mamba-2.8B step after x_proj, bf16, fp32 state; us per layer",
           ["batch", "state MB read+written", "one-row kernel", "as dispatched",
            "rows kernel best (block_d, warps, block_r)", "mamba_ssm (cuBLAS dt_proj + update)"], rows, results,
           args.out)


if __name__ == "__main__":
    main()
