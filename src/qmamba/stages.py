"""The training stages, one table: what each trains, what it defaults to, which data format it reads.

    stage     trains                       lr     global batch  data format
    align     connector                    1e-4   256           align       LLaVA stage 1
    finetune  connector + llm              2e-5   128           finetune    LLaVA stage 2
    full      connector + llm + vision     2e-5   128           finetune

The defaults are the paper's recipe (Q-Mamba Sec. 4.1; LLaVA-style two stages): what a stage of a run
config gets unless it says otherwise. The data formats are written by ``qmamba.data.dataset``:
``align`` is IMAGE + caption + eos with no chat template (Cobra's alignment), ``finetune`` the chat
template over every turn with labels on the assistant turns.

``apply_stage(model, name)`` freezes what the stage does not train and logs, per component, whether it
trains and how many parameters it holds. Models, data and the training loop all read this module;
it imports neither of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from qmamba.errors import ConfigError

COMPONENTS = ("vision", "connector", "llm")  # the parts of a MultimodalModel, in forward order
DATA_FORMATS = ("align", "finetune")
log = logging.getLogger("qmamba")


@dataclass(frozen=True)
class Stage:
    """One stage: the components it trains, its default ``lr`` and ``global_batch_size``, its data format."""

    name: str
    trains: tuple[str, ...]
    lr: float
    global_batch_size: int
    data_format: str

    @property
    def defaults(self) -> dict[str, Any]:
        """The run-config fields a stage takes from here when it leaves them unset (None)."""
        return {"lr": self.lr, "global_batch_size": self.global_batch_size}


STAGES: dict[str, Stage] = {
    "align": Stage("align", ("connector",), lr=1e-4, global_batch_size=256, data_format="align"),
    "finetune": Stage("finetune", ("connector", "llm"), lr=2e-5, global_batch_size=128, data_format="finetune"),
    "full": Stage("full", ("connector", "llm", "vision"), lr=2e-5, global_batch_size=128, data_format="finetune"),
}


def apply_stage(model: nn.Module, stage: str) -> dict[str, tuple[int, int]]:
    """Set requires_grad for ``stage``; returns and logs {component: (trainable, total)} parameter counts."""
    if stage not in STAGES:
        raise ConfigError(f"stage={stage!r}; expected one of {sorted(STAGES)}")
    report = {}
    for name in COMPONENTS:
        module = getattr(model, name)
        train = name in STAGES[stage].trains
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
