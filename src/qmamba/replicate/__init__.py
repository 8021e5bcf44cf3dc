"""The Q-Mamba paper's experiments on the micro-world, with seeds and confidence intervals.

    qmamba replicate --tier tiny --out runs/replicate --seeds 3

Modules: ``tiers`` (sizes), ``registry`` (Tables 1-4 and the query sweep as cells), ``paper`` (the paper's
numbers), ``run`` (one cell: world, training, evaluation, result file), ``stats`` (intervals), ``findings``
(the paper's claims and their status), ``plots`` and ``report`` (markdown, JSON, PNG), ``driver``
(``replicate``).
"""

from __future__ import annotations

from qmamba.replicate.driver import ReplicateOptions, replicate
from qmamba.replicate.registry import EXPERIMENTS, build_registry
from qmamba.replicate.tiers import TIERS, Tier

__all__ = ["EXPERIMENTS", "TIERS", "ReplicateOptions", "Tier", "build_registry", "replicate"]
