"""Nothing is lost when a run dies: SIGKILL mid-run then the same command continues the same loss
trajectory; a crash while a checkpoint is written leaves the previous one loadable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from train_utils import run_config, write_world

from qmamba.errors import CheckpointError
from qmamba.train import checkpoint as ckpt
from qmamba.train.config import parse_config
from qmamba.train.distributed import DistEnv
from qmamba.train.loop import StageTrainer


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _start(cfg_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "qmamba", "train", "--config", str(cfg_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def test_sigkill_then_restart_continues_the_same_trajectory(tmp_path):
    world = write_world(tmp_path / "w", n=12, text_only=4)
    cfgs = {}
    for name in ("straight", "killed"):  # 16 items, 2 steps per epoch, 7 epochs: 14 steps
        cfg = run_config(world, tmp_path / name, stages=("finetune",), epochs=7, num_workers=1)
        cfg["run"]["checkpoint_every_steps"] = 2
        cfgs[name] = tmp_path / f"{name}.yaml"
        cfgs[name].write_text(yaml.safe_dump(cfg))
    assert _start(cfgs["straight"]).wait(timeout=300) == 0

    proc = _start(cfgs["killed"])
    latest = tmp_path / "killed" / "0-finetune" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not (latest.is_file() and latest.read_text().strip() >= "step-00000004"):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _rows(tmp_path / "killed" / "0-finetune" / "metrics.jsonl")[-1]["step"]
    assert killed_at < 14  # it really died mid-run
    assert _start(cfgs["killed"]).wait(timeout=300) == 0

    a = _rows(tmp_path / "straight" / "0-finetune" / "metrics.jsonl")
    b = _rows(tmp_path / "killed" / "0-finetune" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 15))
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5, abs=1e-6), (ra["step"], ra["loss"], rb["loss"])
        assert rb["lr"] == pytest.approx(ra["lr"], rel=1e-9)
    from safetensors.torch import load_file

    wa = load_file(tmp_path / "straight" / "0-finetune" / "model" / "model.safetensors")
    wb = load_file(tmp_path / "killed" / "0-finetune" / "model" / "model.safetensors")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6), k


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    world = write_world(tmp_path / "w", n=16)
    cfg = parse_config(run_config(world, tmp_path / "run", stages=("align",), epochs=3), "test")
    trainer = StageTrainer(cfg, 0, DistEnv(), None)
    batches = trainer._batches()
    trainer._step([next(batches) for _ in range(trainer.accum)])
    trainer.state["step"] = 1
    trainer._save()
    saved = {k: v.clone() for k, v in trainer.model.connector.state_dict().items()}

    trainer._step([next(batches) for _ in range(trainer.accum)])
    trainer.state["step"] = 2
    real_save = ckpt.dcp.save

    def dying_save(state, checkpoint_id):
        real_save(state, checkpoint_id=checkpoint_id)  # the files are written ...
        raise OSError("disk full")  # ... but the process dies before the checkpoint is complete

    monkeypatch.setattr(ckpt.dcp, "save", dying_save)
    with pytest.raises(OSError):
        trainer._save()
    root = trainer.ckpt_root
    assert (root / "latest").read_text() == "step-00000001" and (root / "step-00000002.tmp").exists()

    fresh = StageTrainer(cfg, 0, DistEnv(), None)
    fresh._resume()
    assert fresh.state["step"] == 1
    for k, v in fresh.model.connector.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_a_corrupt_checkpoint_is_named(tmp_path):
    world = write_world(tmp_path / "w", n=8)
    cfg = parse_config(run_config(world, tmp_path / "run", stages=("align",)), "test")
    trainer = StageTrainer(cfg, 0, DistEnv(), None)
    trainer._save()
    path = ckpt.latest_checkpoint(trainer.ckpt_root)
    for f in path.glob("*.distcp"):
        f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot resume from .*step-00000000"):
        StageTrainer(cfg, 0, DistEnv(), None)._resume()


def test_a_parameter_without_gradient_still_resumes(tmp_path):
    """The absorbed local attention never reads k_proj.bias (it cancels in each slice's softmax): the
    parameter gets no gradient, yet the checkpoint must hold its optimizer state for the resume to load."""
    from qmamba.ops.local_attention import use_local_attention

    world = write_world(tmp_path / "w", n=16)
    cfg = parse_config(run_config(world, tmp_path / "run", stages=("finetune",), epochs=3), "test")
    with use_local_attention("absorbed"):
        trainer = StageTrainer(cfg, 0, DistEnv(), None)
        batches = trainer._batches()
        trainer._step([next(batches) for _ in range(trainer.accum)])
        trainer.state["step"] = 1
        trainer._save()
        fresh = StageTrainer(cfg, 0, DistEnv(), None)
        fresh._resume()
    assert fresh.state["step"] == 1
    names = {p: n for n, p in trainer.model.named_parameters()}
    unread = [names[p] for p in trainer.optimizer.state if names[p].endswith("k_proj.bias")]
    assert unread, "the test needs a parameter the absorbed path does not read"
    fresh_params = dict(fresh.model.named_parameters())
    for p, st in trainer.optimizer.state.items():
        got = fresh.optimizer.state[fresh_params[names[p]]]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(got[key], st[key]), (names[p], key)
