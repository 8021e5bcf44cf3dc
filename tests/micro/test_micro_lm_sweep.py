"""LM recipe sweeps (``qmamba.micro.sweep``, ``benchmarks/micro_lm_sweep.py``) at a few seconds on CPU: two recipes of
a shrunk small size trained in their own processes on one world, each scored on the build's LM gates; a finished
one is not trained again; the table has a row per recipe."""

from __future__ import annotations

import json

from test_micro_small import SHRUNK
from testing_utils import benchmark_script

from qmamba.micro.sweep import sweep


def test_two_recipes_train_in_processes_score_their_gates_and_resume(tmp_path, capsys):
    out = tmp_path / "sweep"
    configs = {"base": {}, "more": {"sft_steps": 3, "sft_lr": 5e-4}}
    assert sweep(out, configs, SHRUNK, seed=0, jobs=2, device="cpu") == []
    results = {n: json.loads((out / n / "result.json").read_text()) for n in configs}
    assert results["more"]["lm"]["config"]["sft_steps"] == 3 and results["more"]["lm"]["config"]["sft_lr"] == 5e-4
    assert results["base"]["lm"]["config"]["sft_steps"] == SHRUNK.lm_train["sft_steps"]
    for r in results.values():
        gates = r["gates"]
        assert set(gates["figures"]) == {"lm_grounded", "lm_mmbench_circular"}
        assert set(gates["pope"]) == {"random", "popular", "adversarial"}
        assert 0 <= gates["figures"]["lm_mmbench_circular"] <= 1
    # same world and tokenizer, same seed: the shared part of both runs is the same
    assert results["base"]["lm"]["first_losses"] == results["more"]["lm"]["first_losses"]
    stamp = (out / "base" / "result.json").stat().st_mtime_ns
    assert sweep(out, configs, SHRUNK, seed=0, jobs=2, device="cpu") == []  # nothing left to do
    assert (out / "base" / "result.json").stat().st_mtime_ns == stamp
    table = benchmark_script("micro_lm_sweep").report(out)
    assert table.count("\n| base") == 1 and table.count("\n| more") == 1
