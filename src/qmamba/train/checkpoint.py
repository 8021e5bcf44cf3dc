"""Training checkpoints: the full training state, written atomically, resumable with any number of GPUs.

    <stage_dir>/checkpoints/step-00000120/   torch.distributed.checkpoint (DCP) shards of the trainable
                                             weights and optimizer state, + trainer.pt (step, scheduler,
                                             data position, counters) and rng-<rank>.pt
    <stage_dir>/checkpoints/latest           the name of the newest complete checkpoint

A checkpoint is written into ``step-N.tmp`` and renamed when every rank has finished; ``latest`` is
replaced atomically afterwards. A crash at any moment leaves the previous checkpoint loadable.
DCP stores tensors by name, so a run saved with N GPUs resumes with M.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from qmamba.errors import CheckpointError
from qmamba.train.distributed import DistEnv, barrier

_OPTIONS = StateDictOptions(ignore_frozen_params=True)
# Loading fills the trainable tensors only; DCP itself fails on any of them missing from the checkpoint.
_LOAD_OPTIONS = StateDictOptions(ignore_frozen_params=True, strict=False)


def rng_state() -> dict:
    """Every RNG's state, as tensors and plain values (so it loads with ``weights_only=True``)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "trainer.pt").is_file() else None


def save_checkpoint(root: Path, step: int, model: nn.Module, optimizer, trainer_state: dict, env: DistEnv,
                    keep_last: int = 2) -> Path:
    """Write the training state at ``step``; returns the checkpoint directory."""
    name = f"step-{step:08d}"
    final, tmp = root / name, root / f"{name}.tmp"
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(env)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
    with warnings.catch_warnings():  # one process without a process group is a supported case, not a problem
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / f"rng-{env.rank}.pt")
    if env.is_main:
        torch.save(trainer_state, tmp / "trainer.pt")
    barrier(env)
    if env.is_main:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _write_atomic(root / "latest", name)
        _prune(root, keep_last)
    barrier(env)
    return final


def load_checkpoint(path: Path, model: nn.Module, optimizer, env: DistEnv) -> dict:
    """Restore weights, optimizer and RNG from ``path``; returns the trainer state."""
    try:
        model_sd, optim_sd = get_state_dict(model, optimizer, options=_OPTIONS)
        state = {"model": model_sd, "optim": optim_sd}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(path))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=_LOAD_OPTIONS)
        trainer = torch.load(path / "trainer.pt", weights_only=True)
    except (Exception, CheckpointException) as e:  # DCP's exception derives from BaseException
        raise CheckpointError(f"cannot resume from {path}: {type(e).__name__}: {str(e)[:400]}") from None
    rng = path / f"rng-{env.rank}.pt"
    if rng.is_file():  # a different number of ranks than when saved: fresh ranks keep their own seeds
        set_rng_state(torch.load(rng, weights_only=True))
    return trainer


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(root: Path, keep_last: int) -> None:
    done = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
