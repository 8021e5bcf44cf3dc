"""Which parts of a multimodal model train in each stage, decided in one place.

    align:     connector only (vision encoder and LLM frozen)           LLaVA stage 1
    finetune:  connector + LLM                                          LLaVA stage 2
    full:      connector + LLM + vision encoder
"""

from __future__ import annotations

import logging

from torch import nn

from qmamba.errors import ConfigError

STAGES: dict[str, tuple[str, ...]] = {
    "align": ("connector",),
    "finetune": ("connector", "llm"),
    "full": ("connector", "llm", "vision"),
}
COMPONENTS = ("vision", "connector", "llm")
log = logging.getLogger("qmamba")


def apply_stage(model: nn.Module, stage: str) -> dict[str, tuple[int, int]]:
    """Set requires_grad for ``stage``; returns and logs {component: (trainable, total)} parameter counts."""
    if stage not in STAGES:
        raise ConfigError(f"stage={stage!r}; expected one of {sorted(STAGES)}")
    report = {}
    for name in COMPONENTS:
        module = getattr(model, name)
        train = name in STAGES[stage]
        if hasattr(module, "set_frozen"):
            module.set_frozen(not train)
        module.requires_grad_(train)
        total = sum(p.numel() for p in _unique(module))
        report[name] = (total if train else 0, total)
    lines = [f"  {n:<9} {'trainable' if t else 'frozen':<9} {tot / 1e6:9.2f}M" for n, (t, tot) in report.items()]
    log.info("stage %r:\n%s", stage, "\n".join(lines))
    return report


def _unique(module: nn.Module):
    return {id(p): p for p in module.parameters()}.values()
