"""Kernel plumbing shared by the Triton kernels of every op, and the one timer of qmamba.

    atomic_sum        a sum across the programs of one launch, finished inside it, the same on every run
    pdl               programmatic dependent launch for the kernels of a decode step
    l2_prefetch       asking L2 for a weight tile ahead of its load
    timing            timing a call: CUDA events or perf_counter, a CUDA-graph replay, ``triton.testing.do_bench``
    measured_choice   the choice a decode op measures once per shape (tiles, or its unfused ops)
    triton_backend    registers every op's Triton kernels with ``ops/backend.py``

Nothing here imports Triton at package import: ``timing`` and ``measured_choice`` run without it.
"""
