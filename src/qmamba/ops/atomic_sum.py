"""A sum across the programs of one Triton launch, finished inside the same launch.

Split-k GEMVs and step_in's x_proj have each program hold a partial sum of the same outputs. Rather than
zeroing a buffer before the kernel and casting it after (two more launches), every program adds its part
into an fp32 scratch with atomics and counts itself done on an atomic counter; the program that completes
the count reads the totals (atomically, so from where the adds landed), stores them in the output's dtype,
and zeroes the scratch and the counter for the next launch. The barrier before the count puts every
thread's adds ahead of it; the count's acquire-release ordering makes them visible to the last program.
Launches sharing a scratch must therefore not overlap in time (one stream, as a decode step is).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def add_then_last_stores(scratch, part, add_mask, mask, out, counter, n_parts):
    """scratch, out: pointer blocks shaped like ``part`` (fp32 partial sums); ``part`` is added where
    ``add_mask``; the ``n_parts``-th program to reach ``counter`` stores the totals at ``out`` where ``mask``."""
    tl.atomic_add(scratch, part, mask=add_mask)
    tl.debug_barrier()  # every thread's share is in before the program counts itself done
    done = tl.atomic_add(counter, 1)
    if done == n_parts - 1:
        total = tl.atomic_add(scratch, tl.zeros_like(part), mask=mask)  # read where the adds landed
        tl.store(out, total.to(out.dtype.element_ty), mask=mask)
        tl.store(scratch, tl.zeros_like(part), mask=mask)  # no other program touches them now
        tl.store(counter, 0)
