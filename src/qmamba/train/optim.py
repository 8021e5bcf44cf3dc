"""Optimizer and learning-rate schedule of a stage.

No weight decay on 1-D tensors (norms, biases, the SSM's ``D`` and ``dt_bias``) nor on ``A_log`` (decided
by name, which survives FSDP's parameter wrapping); RAdam (the paper) or AdamW (Cobra);
linear warmup over ``warmup_ratio`` of the steps, then cosine decay to zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qmamba.train.config import StageConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "A_log" in name or "A_b_log" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, stage: StageConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, stage.weight_decay)
    cls = torch.optim.RAdam if stage.optimizer == "radam" else torch.optim.AdamW
    kwargs = {"decoupled_weight_decay": True} if stage.optimizer == "radam" else {}
    return cls(groups, lr=stage.lr, betas=stage.betas, **kwargs)


def warmup_cosine(step: int, total: int, warmup_ratio: float) -> float:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based) of ``total``."""
    warmup = math.ceil(warmup_ratio * total)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, total_steps, warmup_ratio))
