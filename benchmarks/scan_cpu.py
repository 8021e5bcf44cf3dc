"""Mamba-1 selective scan on a CPU (the ``ref`` backend), forward and forward+backward, fp32, at the CPU
quickstart's shapes. Prints a markdown table of median milliseconds.

Calls ``keep_freed_memory`` first, as training does: without it every call of the scan pays for fresh pages
of its large saved tensors and the figures mislead (a cache-blocked variant looked 1.7x faster that way and
was 1.6x slower with it).

    python benchmarks/scan_cpu.py [--shapes finetune,align] [--repeats 5]
"""

from __future__ import annotations

import argparse

import torch

from qmamba.ops.runtime.timing import time_ms
from qmamba.ops.selective_scan import selective_scan_ref
from qmamba.utils.cpu import keep_freed_memory

SHAPES = {  # name: (rows, channels, positions, d_state), as the micro Q-Mamba's training step runs them
    "finetune": (32, 384, 223, 16),  # the micro LM's layers at the finetune stage's longest batch
    "align": (32, 384, 131, 16),  # the micro LM's layers in the align stage
    "queries": (32, 192, 32, 16),  # Q-Mamba's layers over its 32 queries
    "preprocess": (32, 384, 64, 8),  # the bidirectional preprocessing over the 64 patches
}


def layer_inputs(b: int, d: int, l: int, n: int) -> dict:
    """``selective_scan_ref``'s arguments as a Mamba-1 layer passes them, requiring gradients."""
    t = {"u": torch.randn(b, d, l), "delta": torch.randn(b, d, l) * 0.5, "A": -torch.rand(d, n) * 4 - 0.1,
         "B": torch.randn(b, n, l), "C": torch.randn(b, n, l), "D": torch.randn(d), "z": torch.randn(b, d, l),
         "delta_bias": torch.randn(d) * 0.3}
    return {k: v.requires_grad_() for k, v in t.items()}


def row(name: str, repeats: int) -> str:
    """One table row: median ms of the forward alone and of forward + backward at one shape."""
    t = layer_inputs(*SHAPES[name])
    scan = lambda: selective_scan_ref(**t, delta_softplus=True)  # noqa: E731
    cpu = torch.device("cpu")
    with torch.no_grad():
        fwd = time_ms(scan, cpu, warmup=1, repeats=repeats)
    gy = torch.randn(SHAPES[name][:3])
    both = time_ms(lambda: torch.autograd.grad((scan() * gy).sum(), list(t.values())), cpu, 1, repeats)
    return f"| {name} {SHAPES[name]} | {fwd:.1f} | {both:.1f} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    keep_freed_memory()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| shape (b, d, l, n) | fwd ms | fwd+bwd ms |\n| --- | ---: | ---: |")
    for name in a.shapes.split(","):
        print(row(name, a.repeats), flush=True)


if __name__ == "__main__":
    main()
