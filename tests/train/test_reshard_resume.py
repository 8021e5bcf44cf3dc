"""A run checkpointed by 2 gloo ranks (FSDP2) resumes in 1 process and continues the loss trajectory of a
run that used 1 process throughout: the global batch of every step holds the same samples whatever the
number of processes, and the sharded checkpoint (DCP) is re-sharded on load."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from train_utils import run_config, write_world

from qmamba.train.config import parse_config
from qmamba.train.distributed import DistEnv, finish, shutdown
from qmamba.train.loop import StageTrainer
from qmamba.train.runner import train

STOP_AT = 4  # the 2-rank run saves its checkpoint after this many steps and stops


def _worker(rank: int, world: int, init_file: str, cfg_dict: dict) -> None:
    sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    env = DistEnv(rank, world, rank, torch.device("cpu"))
    try:
        trainer = StageTrainer(parse_config(cfg_dict, "test"), 0, env, None)
        trainer.total_steps = STOP_AT  # the loop ends (and checkpoints) here; the schedule stays the full one
        trainer.export = lambda: None  # not finished: no exported model, no DONE marker
        trainer.run()
    except BaseException:
        shutdown(env)
        raise
    finish(env)


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "0-finetune" / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def test_checkpoint_of_two_ranks_resumes_in_one_process(tmp_path):
    world = write_world(tmp_path / "w", n=24)  # 3 steps an epoch: the stop falls mid-epoch
    cfgs = {}
    for name in ("straight", "resharded"):
        cfg = run_config(world, tmp_path / name, stages=("finetune",), global_batch_size=8, micro_batch_size=2,
                         epochs=2, group_by=None)
        cfg["run"].update(checkpoint_every_steps=0, log_every=1)
        cfgs[name] = cfg
    train(parse_config(cfgs["straight"], "test"))
    mp.spawn(_worker, args=(2, str(tmp_path / "pg"), cfgs["resharded"]), nprocs=2)
    first = _losses(tmp_path / "resharded")
    assert sorted(first) == list(range(1, STOP_AT + 1))
    train(parse_config(cfgs["resharded"], "test"))  # the same command, one process: resumes at STOP_AT
    a, b = _losses(tmp_path / "straight"), _losses(tmp_path / "resharded")
    assert sorted(a) == sorted(b) and len(a) > STOP_AT
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-6), (step, a[step], b[step])
