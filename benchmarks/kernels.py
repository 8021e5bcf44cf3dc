"""Per-kernel timings on the GPU: qmamba's Triton kernels beside the reference and mamba_ssm's kernels.

    python benchmarks/kernels.py --out kernels.json

Shapes are one layer of Mamba-2.8B (d_inner 5120, d_state 16) and Mamba2-2.7B (80 heads of 64, d_state 128)
at 800 tokens, batch 1, bf16; the decode ops at batch 1 and 16. mamba_ssm / causal_conv1d are used only if
they import. Each figure is the median of ``triton.testing.do_bench`` (milliseconds); "fwd+bwd" includes the
forward. A markdown table is printed last.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
import torch.nn.functional as F

from qmamba.ops import backend
from qmamba.ops.rms_norm.naive import add_norm_ref
from qmamba.ops.runtime.timing import bench_ms
from qmamba.ops.selective_scan.chunked import selective_scan_ref
from qmamba.ops.ssd.chunked import ssd_chunk_scan_ref
from qmamba.ops.state_update.naive import selective_state_update_ref


def _peer(module: str, name: str):
    try:
        mod = __import__(module, fromlist=[name])
        return getattr(mod, name)
    except Exception:  # a peer that does not import is simply not timed
        return None


def _fwd_bwd(fn: Callable[[], torch.Tensor], inputs: list[torch.Tensor]) -> Callable[[], None]:
    def run():
        out = fn()
        out = out[0] if isinstance(out, tuple) else out
        grads = torch.autograd.grad(out, inputs, torch.ones_like(out), allow_unused=True)
        return grads

    return run


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def selective_scan_cases(dev, dtype, b=1, d=5120, l=800, n=16):
    u, delta, z = (_leaf(torch.randn(b, d, l, device=dev, dtype=dtype)) for _ in range(3))
    A = _leaf(-torch.rand(d, n, device=dev).exp())
    B, C = (_leaf(torch.randn(b, n, l, device=dev, dtype=dtype)) for _ in range(2))
    D, bias = _leaf(torch.randn(d, device=dev)), _leaf(torch.randn(d, device=dev) - 4)
    args = (u, delta, A, B, C, D, z, bias, True)
    ours = lambda: backend.resolve("selective_scan", "cuda")(*args)  # noqa: E731
    peer = _peer("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")
    inputs = [u, delta, A, B, C, D, z, bias]
    ref = lambda: selective_scan_ref(*args)  # noqa: E731
    return "selective_scan (1, 5120, 800, n16)", ours, ref, (peer and (lambda: peer(*args))), inputs


def conv1d_cases(dev, dtype, b=1, d=5120, l=800, w=4):
    x = _leaf(torch.randn(b, d, l, device=dev, dtype=dtype))
    weight, bias = _leaf(torch.randn(d, w, device=dev, dtype=dtype)), _leaf(torch.randn(d, device=dev, dtype=dtype))
    ours = lambda: backend.resolve("causal_conv1d", "cuda")(x, weight, bias, activation="silu")  # noqa: E731
    ref = lambda: F.silu(F.conv1d(F.pad(x, (w - 1, 0)), weight.unsqueeze(1), bias, groups=d))  # noqa: E731
    peer = _peer("causal_conv1d", "causal_conv1d_fn")
    peer_fn = peer and (lambda: peer(x, weight, bias, activation="silu"))
    return "causal_conv1d (1, 5120, 800, w4)", ours, ref, peer_fn, [x, weight, bias]


def add_norm_cases(dev, dtype, rows=800, d=2560):
    x, res = _leaf(torch.randn(rows, d, device=dev, dtype=dtype)), _leaf(torch.randn(rows, d, device=dev))
    weight = _leaf(torch.randn(d, device=dev))
    ours = lambda: backend.resolve("add_norm", "cuda")(x, weight, None, res, eps=1e-5, residual_in_fp32=True)  # noqa: E731
    peer = _peer("mamba_ssm.ops.triton.layer_norm", "rms_norm_fn")
    peer_fn = peer and (lambda: peer(x, weight, None, residual=res, prenorm=True, residual_in_fp32=True, eps=1e-5))
    ref = lambda: add_norm_ref(x, weight, None, res, eps=1e-5, residual_in_fp32=True)  # noqa: E731
    return "add_norm (800, 2560)", ours, ref, peer_fn, [x, res, weight]


def ssd_cases(dev, dtype, b=1, l=800, h=80, p=64, n=128, T=256):
    x, z = (_leaf(torch.randn(b, l, h, p, device=dev, dtype=dtype)) for _ in range(2))
    dt = _leaf(torch.randn(b, l, h, device=dev, dtype=dtype) - 2)
    A, D, dt_bias = _leaf(-torch.rand(h, device=dev).exp()), _leaf(torch.randn(h, device=dev)), _leaf(
        torch.randn(h, device=dev))
    B, C = (_leaf(torch.randn(b, l, 1, n, device=dev, dtype=dtype)) for _ in range(2))
    kw = dict(D=D, z=z, dt_bias=dt_bias, dt_softplus=True)
    ours = lambda: backend.resolve("ssd_chunk_scan", "cuda")(x, dt, A, B, C, T, **kw)  # noqa: E731
    peer = _peer("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")
    return "ssd_chunk_scan (1, 800, 80x64, n128)", ours, (lambda: ssd_chunk_scan_ref(x, dt, A, B, C, T, **kw)), \
        (peer and (lambda: peer(x, dt, A, B, C, T, **kw))), [x, dt, A, B, C, D, z, dt_bias]


def state_update_cases(dev, dtype, b, d=5120, n=16):
    state = torch.randn(b, d, n, device=dev, dtype=torch.float32)
    x, dt, z = (torch.randn(b, d, device=dev, dtype=dtype) for _ in range(3))
    A, B, C = -torch.rand(d, n, device=dev).exp(), torch.randn(b, n, device=dev, dtype=dtype), torch.randn(
        b, n, device=dev, dtype=dtype)
    D, dt_bias = torch.randn(d, device=dev), torch.randn(d, device=dev)
    args = (state, x, dt, A, B, C, D, z, dt_bias, True)
    ours = lambda: backend.resolve("selective_state_update", "cuda")(*args)  # noqa: E731
    peer = _peer("mamba_ssm.ops.triton.selective_state_update", "selective_state_update")
    ref = lambda: selective_state_update_ref(*args)  # noqa: E731
    return f"state_update m1 (b{b}, 5120, n16)", ours, ref, (peer and (lambda: peer(*args))), []


def run(dtype=torch.bfloat16, only: str = "", peers: bool = True) -> list[dict]:
    dev = torch.device("cuda")
    rows = []
    cases = [selective_scan_cases, conv1d_cases, add_norm_cases, ssd_cases,
             lambda d, t: state_update_cases(d, t, 1), lambda d, t: state_update_cases(d, t, 16)]
    for make in cases:
        name, ours, ref, peer, inputs = make(dev, dtype)
        if only and not any(key in name for key in only.split(",")):
            continue
        peer = peer if peers else None  # mamba_ssm's SSD autotunes for minutes on its first call
        row = {"op": name}
        for who, fn in (("qmamba", ours), ("mamba_ssm", peer), ("ref", None if "ssd" in name else ref)):
            if fn is None:
                continue
            try:
                with torch.no_grad():
                    row[f"{who} fwd"] = bench_ms(fn)
                if inputs:
                    row[f"{who} fwd+bwd"] = bench_ms(_fwd_bwd(fn, inputs))
            except Exception as err:  # keep the other figures
                row[f"{who} error"] = f"{type(err).__name__}: {str(err)[:200]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    cols = ["qmamba fwd", "mamba_ssm fwd", "ref fwd", "qmamba fwd+bwd", "mamba_ssm fwd+bwd", "ref fwd+bwd"]
    out = [f"| op ({torch.cuda.get_device_name()}, bf16, ms) | " + " | ".join(cols) + " |",
           "| --- |" + " --- |" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.3f}" if c in r else "-" for c in cols]
        out.append(f"| {r['op']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument("--only", default="", help="comma-separated op names to time (default: all)")
    parser.add_argument("--no-peers", action="store_true", help="leave mamba_ssm / causal_conv1d out")
    parser.add_argument("--scan-bwd-warps", type=int, default=None,
                        help="warps of the Mamba-1 scan's backward kernel (default: BWD_WARPS)")
    parser.add_argument("--ssd-tiles", default="",
                        help="SSD (rows a block x warps) per kernel in place of the defaults, e.g. out=32x8,bwd=16x8")
    args = parser.parse_args()
    if args.ssd_tiles:
        from qmamba.ops.ssd import chunk as ssd_chunk

        for item in args.ssd_tiles.split(","):
            kernel, tile = item.split("=")
            ssd_chunk.TILES[kernel] = tuple(int(v) for v in tile.split("x"))
    if args.scan_bwd_warps:
        from qmamba.ops.selective_scan import chunk_bwd

        chunk_bwd.BWD_WARPS = args.scan_bwd_warps
    rows = run(only=args.only, peers=not args.no_peers)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    print(table(rows))


if __name__ == "__main__":
    main()
