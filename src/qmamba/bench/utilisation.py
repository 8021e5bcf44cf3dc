"""How far each figure of the bench is from the card's floor: the work a component does, the card's measured
peaks, and the achieved rates.

    count_flops(fn)             matrix-product FLOPs of one fn() (matmuls, convolutions, attention), counted by
                                ``torch.utils.flop_counter`` on the pure-PyTorch ops
    Work(flops, bytes)          one component's work: its product FLOPs and the least memory traffic it needs
                                (its weights read once, its inputs read and outputs written once)
    measure_peaks(device)       the card's bf16 matmul rate (TFLOP/s) and copy bandwidth (GB/s), measured
    rates(work, ms, peaks)      achieved TFLOP/s and GB/s and their fractions of the peaks

The FLOPs are counted on the reference ops (``use_backend('ref')``): qmamba's fused kernels do the same
products but are invisible to PyTorch's counter. Elementwise work (the scan, norms, activations) is not
counted, so a component whose time goes to elementwise passes shows a low matmul fraction and a byte rate
that tells how close it is to the bandwidth floor instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from qmamba.ops.backend import use_backend
from qmamba.ops.runtime.timing import time_ms


@dataclass(frozen=True)
class Work:
    flops: float  # matrix-product FLOPs (a multiply-add counts 2)
    bytes: float  # least memory traffic: weights once, inputs read once, outputs written once

    def __mul__(self, k: float) -> Work:
        return Work(self.flops * k, self.bytes * k)

    def __add__(self, other: Work) -> Work:
        return Work(self.flops + other.flops, self.bytes + other.bytes)


class _ProductFlops(TorchDispatchMode):
    """Sums the FLOPs of every aten op that PyTorch's counter knows (matmuls, convolutions, attention);
    unlike ``FlopCounterMode`` it tracks no modules, so it runs under ``inference_mode`` too."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        count = flop_registry.get(func._overloadpacket)
        if count is None:  # under inference mode composite ops (linear, ...) come whole: count their parts
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """Matrix-product FLOPs of one ``fn()``, run on the reference ops (the call really runs)."""
    with use_backend("ref"), _ProductFlops() as counter:
        fn()
    return counter.flops


def tensor_bytes(tensors: Iterable[Tensor | None]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def weight_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers, each counted once (tied weights too)."""
    seen = {t.data_ptr(): t for t in (*module.parameters(), *module.buffers())}
    return tensor_bytes(seen.values())


def measure_peaks(device: torch.device, dtype: torch.dtype, matmul_n: int | None = None,
                  copy_mib: int | None = None, repeats: int = 10) -> dict:
    """The card's matmul rate on large square products (``matmul_n``^3) and its copy bandwidth (a
    ``copy_mib`` MiB tensor read and written), both measured now, in ``dtype``."""
    gpu = device.type == "cuda"
    n = matmul_n or (8192 if gpu else 512)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    ms = time_ms(lambda: torch.mm(a, b, out=out), device, 3, repeats)
    elements = (copy_mib or (1024 if gpu else 64)) * 2**20 // 4
    src = torch.empty(elements, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    copy_ms = time_ms(lambda: dst.copy_(src), device, 3, repeats)
    return {"matmul_tflops": 2 * n**3 / ms / 1e9, "copy_gbs": 2 * src.numel() * 4 / copy_ms / 1e6,
            "matmul_n": n, "dtype": str(dtype).removeprefix("torch.")}


def rates(work: Work, ms: float, peaks: dict) -> dict:
    """Achieved TFLOP/s and GB/s of ``work`` done in ``ms``, and their fractions of the measured peaks."""
    tflops, gbs = work.flops / ms / 1e9, work.bytes / ms / 1e6
    return {"tflops": tflops, "gbs": gbs, "matmul_frac": tflops / peaks["matmul_tflops"],
            "copy_frac": gbs / peaks["copy_gbs"], "gflop": work.flops / 1e9, "mb": work.bytes / 1e6}
