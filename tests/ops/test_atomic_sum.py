"""The in-launch sums across programs (ops/runtime/atomic_sum.py): step_in's fixed-point sums are exact to 2^-32 and
order-free, store NaN rather than a wrapped number, and leave their scratch zeroed; split-k's slot sums add in
slot order. Interpreter on CPU, compiled on GPU."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

from qmamba.ops.runtime.atomic_sum import add_then_last_stores, store_then_last_sums  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _fixed_point_kernel(parts_ptr, scratch_ptr, out_ptr, cnt_ptr, n, BLOCK: tl.constexpr):
    r = tl.arange(0, BLOCK)
    part = tl.load(parts_ptr + tl.program_id(0) * n + r, mask=r < n, other=0.0)
    add_then_last_stores(scratch_ptr + r, part, r < n, r < n, out_ptr + r, cnt_ptr, tl.num_programs(0))


@triton.jit
def _slots_kernel(parts_ptr, slots_ptr, out_ptr, cnt_ptr, n, BLOCK: tl.constexpr):
    r = tl.arange(0, BLOCK)
    part = tl.load(parts_ptr + tl.program_id(0) * n + r, mask=r < n, other=0.0)
    store_then_last_sums(slots_ptr + r, part, r < n, out_ptr + r, cnt_ptr, tl.program_id(0), tl.num_programs(0), n)


def _fixed_point(parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p, n = parts.shape
    scratch = torch.zeros(n, dtype=torch.int64, device=DEVICE)
    out, cnt = torch.empty(n, device=DEVICE), torch.zeros(1, dtype=torch.int32, device=DEVICE)
    _fixed_point_kernel[(p,)](parts.to(DEVICE), scratch, out, cnt, n, BLOCK=triton.next_power_of_2(n))
    return out.cpu(), scratch, cnt


def test_fixed_point_sums_are_exact_where_float_order_would_round():
    # (1 + 2^-30) - 1 is 0 in fp32: added as floats in arrival order, 2^-30 would be lost
    parts = torch.tensor([[1.0, 5.0], [2.0**-30, -3.0], [-1.0, 0.25], [2.0**-20, 0.0]])
    out, scratch, cnt = _fixed_point(parts)
    assert out.tolist() == [2.0**-30 + 2.0**-20, 2.25]
    assert not scratch.any() and int(cnt) == 0, "the scratch and counter are left zeroed"


def test_fixed_point_sums_round_each_part_to_the_unit():
    torch.manual_seed(0)
    parts = torch.randn(37, 11) * 100
    out, _, _ = _fixed_point(parts)
    assert (out.double() - parts.double().sum(0)).abs().max() <= 37 * 2.0**-33 + out.abs().max() * 2.0**-24


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), 2.0**31 / 3])
def test_fixed_point_stores_nan_rather_than_a_wrapped_or_dropped_sum(bad):
    # a part not finite, or one that 3 parts could take past 2^31: every output of the count is NaN
    parts = torch.tensor([[64.0, 2.0], [bad, 1.0], [64.0, 1.0]])
    out, scratch, cnt = _fixed_point(parts)
    assert out.isnan().all()
    assert not scratch.any() and int(cnt) == 0
    parts[1, 0] = 2.0**29  # inside (3 * 2^29 < 2^31): exact, as fp32 holds it
    assert _fixed_point(parts)[0].tolist() == [2.0**29 + 128, 4.0]


def test_slot_sums_add_in_slot_order():
    parts = torch.tensor([[1.0, 1.0], [2.0**-30, 2.0**-30], [-1.0, 2.0**-20], [2.0**-20, -1.0]])
    n = parts.shape[1]
    slots, out = torch.empty(parts.numel(), device=DEVICE), torch.empty(n, device=DEVICE)
    cnt = torch.zeros(1, dtype=torch.int32, device=DEVICE)
    _slots_kernel[(4,)](parts.to(DEVICE), slots, out, cnt, n, BLOCK=2)
    assert out.tolist() == [2.0**-20, 2.0**-20]  # (((1 + 2^-30) - 1) + 2^-20), ((1 + 2^-30) + 2^-20) - 1 in fp32
    assert int(cnt) == 0
