"""Training on CPU: a tiny model overfits, align freezes what it should, accumulation normalises by the
tokens of the whole global batch, bad data is counted and stops the run past its limit."""

from __future__ import annotations

import json

import pytest
import torch
from testing_utils import assert_close
from train_utils import run_config, write_world

from qmamba.errors import InputError
from qmamba.models.multimodal import MultimodalModel
from qmamba.train.config import parse_config
from qmamba.train.distributed import DistEnv
from qmamba.train.loop import StageTrainer
from qmamba.train.runner import train


def _losses(stage_dir):
    return [json.loads(line)["loss"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_model_overfits_a_small_batch(tmp_path):
    world = write_world(tmp_path / "w", n=8)
    cfg = run_config(world, tmp_path / "run", stages=("finetune",), epochs=40, lr=1e-2, global_batch_size=8,
                     micro_batch_size=8, warmup_ratio=0.0, optimizer="adamw")
    cfg["run"]["checkpoint_every_steps"] = 0
    train(parse_config(cfg, "test"))
    losses = _losses(tmp_path / "run" / "0-finetune")
    assert len(losses) == 40
    assert losses[0] > 4.0 and losses[-1] < 0.3, losses[::5]  # from ~ln(300) to memorised


def test_align_leaves_vision_and_llm_bit_identical(tmp_path):
    world = write_world(tmp_path / "w", n=8)
    train(parse_config(run_config(world, tmp_path / "run", stages=("align",), epochs=2), "test"))
    torch.manual_seed(0)
    initial = MultimodalModel(__import__("qmamba").models.presets.get_preset("tiny-qmamba-128")).state_dict()
    trained = MultimodalModel.from_pretrained(tmp_path / "run" / "0-align" / "model").state_dict()
    changed = {name for name, value in initial.items() if not torch.equal(value, trained[name])}
    frozen = [n for n in initial if not n.startswith("connector.")]
    assert frozen and not changed & set(frozen), sorted(changed & set(frozen))  # bit-identical
    connector = [n for n in initial if n.startswith("connector.")]
    assert len(changed) > 0.8 * len(connector)  # (a few tiny updates can round away in fp32)


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")  # replaced to read grads
def test_accumulation_1x8_equals_8x1(tmp_path):
    world = write_world(tmp_path / "w", n=8, text_only=0)

    def one_step(micro: int):
        cfg = parse_config(run_config(world, tmp_path / f"run{micro}", stages=("finetune",),
                                      global_batch_size=8, micro_batch_size=micro), "test")
        trainer = StageTrainer(cfg, 0, DistEnv(), None)
        batches = trainer._batches()
        micro_batches = [next(batches) for _ in range(trainer.accum)]
        assert trainer.accum == 8 // micro
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        grads = {}
        trainer.optimizer.step = lambda: grads.update(  # capture the gradients instead of stepping
            {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
        out = trainer._step(micro_batches)
        return out, grads, before

    out8, g8, p8 = one_step(8)
    out1, g1, p1 = one_step(1)
    assert out1["target_tokens"] == out8["target_tokens"]
    assert out1["loss"] == pytest.approx(out8["loss"], rel=1e-5)
    for name in g8:
        assert torch.equal(p1[name], p8[name])
    flat1, flat8 = (torch.cat([g[n].flatten() for n in sorted(g8)]) for g in (g1, g8))
    assert_close(flat1, flat8, 1e-5, "all gradients")
    for name in g8:  # per tensor, with an absolute floor for gradients that are zero up to rounding
        assert torch.allclose(g1[name], g8[name], rtol=1e-4, atol=1e-6 * flat8.abs().max()), name


def test_bad_samples_are_counted_then_stop_the_run(tmp_path):
    world = write_world(tmp_path / "w", n=16)
    (world["images"] / "3.png").write_bytes(b"broken")
    cfg = run_config(world, tmp_path / "ok", stages=("finetune",), max_bad_fraction=0.1)
    train(parse_config(cfg, "test"))
    rows = [json.loads(line) for line in (tmp_path / "ok" / "0-finetune" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["bad_samples"] == 1
    (world["images"] / "5.png").unlink()
    cfg = run_config(world, tmp_path / "stop", stages=("finetune",), max_bad_fraction=0.1)  # 2 of 16 > 1.6
    with pytest.raises(InputError, match="2 bad samples.*max_bad_fraction=0.1"):
        train(parse_config(cfg, "test"))
