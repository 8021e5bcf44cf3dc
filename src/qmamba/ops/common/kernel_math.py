"""Triton device functions shared by several kernels."""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * LOG2E)


@triton.jit
def softplus(x):
    """log(1 + exp(x)), with a series for log1p of small arguments (libdevice-free)."""
    e = tl.exp(-tl.abs(x))
    series = e * (1.0 - e * (0.5 - e * (0.3333333333 - e * (0.25 - e * (0.2 - e * 0.1666666667)))))
    return tl.maximum(x, 0.0) + tl.where(e < 0.1, series, tl.log(1.0 + e))


@triton.jit
def mm(a, b, DOT: tl.constexpr, PREC: tl.constexpr, EMU: tl.constexpr):
    """a @ b on operands cast to DOT, fp32 accumulation.

    EMU (Triton's CPU interpreter only, whose bf16 ``tl.dot`` is wrong): round to DOT, multiply in fp32.
    """
    if EMU:
        return tl.dot(a.to(DOT).to(tl.float32), b.to(DOT).to(tl.float32), input_precision=PREC)
    return tl.dot(a.to(DOT), b.to(DOT), input_precision=PREC)
