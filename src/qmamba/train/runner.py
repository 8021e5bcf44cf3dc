"""A whole run: the resolved config written to the run directory, then each stage in order, each
starting from the model the previous stage exported (finetune starts from align's connector)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from qmamba.train.config import TrainConfig, to_yaml
from qmamba.train.distributed import DistEnv, finish, init_distributed, shutdown
from qmamba.train.loop import run_stage, stage_summary
from qmamba.utils.cpu import keep_freed_memory

log = logging.getLogger("qmamba")


def train(cfg: TrainConfig, env: DistEnv | None = None) -> Path:
    """Run every stage of ``cfg``; returns the final exported model directory."""
    env = env or init_distributed(cfg.run.device)
    if env.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    else:
        keep_freed_memory()
    out = cfg.output_dir
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(to_yaml(cfg))
        log.info("run %s on %d process(es), %s", out, env.world_size, env.device)
        for stage in cfg.stages:
            log.info("  %s", stage_summary(stage))
    model_dir = None
    for i in range(len(cfg.stages)):
        model_dir = run_stage(cfg, i, env, start_from=model_dir)
    if env.is_main:
        log.info("done: %s", model_dir)
    return model_dir


def main_train(cfg: TrainConfig) -> Path:
    env = init_distributed(cfg.run.device)
    try:
        model_dir = train(cfg, env)
    except BaseException:
        shutdown(env)
        raise
    finish(env)
    return model_dir
