"""benchmarks/micro_recall_probe.py on CPU: the key sits where the probe says, and a gap within the convolutions'
reach is learned while a step budget too small to learn anything reports no step."""

from __future__ import annotations

import torch
from testing_utils import benchmark_script


def test_the_key_sits_gap_tokens_before_the_last_position():
    probe_mod = benchmark_script("micro_recall_probe")
    probe = probe_mod.Probe(gap=3, length=12)
    ids, keys = probe_mod.rows(probe, 64, torch.Generator().manual_seed(0), "cpu")
    assert ids.shape == (64, 12) and torch.equal(ids[:, 12 - 1 - 3], keys)
    others = torch.cat([ids[:, :8], ids[:, 9:]], 1)
    assert bool((others >= 2).all()) and set(keys.tolist()) == {0, 1}  # only the key is a 0 or 1 token


def test_a_short_gap_is_learned_and_one_step_learns_nothing():
    probe_mod = benchmark_script("micro_recall_probe")
    logits_of, params = probe_mod.models(32, 2, 8, "cpu", ["qmamba"])["qmamba"]
    learned = probe_mod.train(logits_of, params, probe_mod.Probe(gap=1, length=16, steps=300), "cpu")
    assert learned["steps_to_target"] is not None and learned["accuracy"] >= 0.95
    logits_of, params = probe_mod.models(32, 2, 8, "cpu", ["qmamba"])["qmamba"]
    untrained = probe_mod.train(logits_of, params, probe_mod.Probe(gap=1, length=16, steps=1), "cpu")
    assert untrained["steps_to_target"] is None and untrained["steps_run"] == 1
