"""Helpers that the Triton kernels of several ops share, so that no kernel file imports another's.

    kernel_math  device functions: ``LOG2E``, ``softplus``, ``mm`` (a dot with the operands' rounding chosen)
    launch       host-side helpers of a launch: ``bc_strides``, ``block_rows``

Importing these modules imports Triton; only kernel files do.
"""
