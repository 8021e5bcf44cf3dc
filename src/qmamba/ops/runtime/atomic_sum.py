"""A sum across the programs of one Triton launch, finished inside the same launch, the same on every run.

Split-k GEMVs and step_in's x_proj have each program hold a partial sum of the same outputs. Rather than
zeroing a buffer before the kernel and casting it after (two more launches), every program leaves its part in
a scratch and counts itself done on an atomic counter; the program that completes the count adds the parts
up, stores the totals in the output's dtype and leaves the scratch ready for the next launch. The barrier
before the count puts every thread's writes ahead of it; the count's acquire-release ordering makes them
visible to the last program. Launches sharing a scratch must not overlap in time (one stream, as a decode
step is). Float atomics would make the totals depend on the order the programs arrive in (a bf16 greedy
token can flip between two runs of the same prompt), so neither helper adds floats in arrival order:

    store_then_last_sums   a few parts (split-k's slices of a tile): a slot each, plain stores; the last
                           program adds the slots in slot order
    add_then_last_stores   many parts (step_in's hundreds of programs, all adding into the same x_proj sums):
                           atomic adds of 64-bit fixed-point integers (``FRAC_BITS`` fraction bits), which
                           give the same total in any order; the last program reads the totals atomically
                           (from where the adds landed) and zeroes the scratch

Fixed point rounds each part to 2^-33, so n parts are within n * 2^-33 of the exact sum, and totals must stay
below 2^31 in magnitude: a program whose part could take the sum past it (|part| * n_parts >= 2^31, or a part
not finite) marks the count, and every output of the launch's count is stored as NaN rather than as a wrapped
number.
"""

from __future__ import annotations

import triton
import triton.language as tl

FRAC_BITS = 32
COUNT_BITS = 16  # the counter's low bits count the parts that arrived; the bits above count overflowing ones
MAX_PARTS = 2 ** COUNT_BITS - 1  # programs one add_then_last_stores count can take (callers must not launch more)
_SCALE = tl.constexpr(2.0 ** FRAC_BITS)
_UNIT = tl.constexpr(2.0 ** -FRAC_BITS)
_LIMIT = tl.constexpr(2.0 ** 31)  # the largest total magnitude the int64 sums hold at FRAC_BITS
_COUNT_BITS = tl.constexpr(COUNT_BITS)
_COUNT_MASK = tl.constexpr(MAX_PARTS)


@triton.jit
def add_then_last_stores(scratch, part, add_mask, mask, out, counter, n_parts):
    """scratch (int64), out: pointer blocks shaped like ``part`` (fp32 partial sums); ``part`` is added where
    ``add_mask``; the ``n_parts``-th program to reach ``counter`` (int32) stores the totals at ``out`` where
    ``mask``."""
    ok = (tl.abs(part) * n_parts < _LIMIT) | (add_mask == 0)  # false for inf and NaN too
    big = tl.max(1 - ok.to(tl.int32))  # this program's parts are stored as NaN, with all that share its count
    fixed = tl.floor(tl.where(ok, part, 0.0) * _SCALE + 0.5)  # exact, then to nearest
    tl.atomic_add(scratch, fixed.to(tl.int64), mask=add_mask)
    tl.debug_barrier()  # every thread's share is in before the program counts itself done
    done = tl.atomic_add(counter, 1 + (big << _COUNT_BITS))
    if (done & _COUNT_MASK) == n_parts - 1:
        total = tl.atomic_add(scratch, tl.zeros_like(part).to(tl.int64), mask=mask)  # read where the adds landed
        value = total.to(tl.float32) * _UNIT
        bad = (done >> _COUNT_BITS) + big > 0  # some part was not finite or could have wrapped the sum
        tl.store(out, tl.where(bad, float("nan"), value).to(out.dtype.element_ty), mask=mask)
        tl.store(scratch, tl.zeros_like(part).to(tl.int64), mask=mask)  # no other program touches them now
        tl.store(counter, 0)


@triton.jit
def store_then_last_sums(slots, part, mask, out, counter, slot, n_parts, slot_stride):
    """The same finish for a few programs (split-k slices): each stores its ``part`` in its own ``slot`` of
    ``slots`` (fp32, ``slot_stride`` apart; pointer block shaped like ``part``) with no atomics, and the
    ``n_parts``-th to reach ``counter`` adds the slots in slot order, so the float sum is the same on every
    run, and stores it at ``out`` where ``mask``. Reading n_parts slots is the last program's extra work."""
    tl.store(slots + slot * slot_stride, part, mask=mask)
    tl.debug_barrier()  # every thread's slot is stored before the program counts itself done
    done = tl.atomic_add(counter, 1)
    if done == n_parts - 1:
        total = tl.zeros_like(part)
        for s in range(n_parts):  # past L1: other programs wrote these
            total += tl.load(slots + s * slot_stride, mask=mask, other=0.0, cache_modifier=".cg")
        tl.store(out, total.to(out.dtype.element_ty), mask=mask)
        tl.store(counter, 0)
