"""LM recipe sweeps (``qmamba.micro.sweep``, ``benchmarks/micro_lm_sweep.py``) at a few seconds on CPU: two recipes of
a shrunk small size trained in their own processes on one world, each scored on the build's LM gates; a finished
one is not trained again; the table has a row per recipe. A recipe may change the LM's shape and draw its own world;
an unknown setting is refused before anything is drawn."""

from __future__ import annotations

import json

import pytest
from test_micro_small import SHRUNK
from testing_utils import benchmark_script

from qmamba.errors import ConfigError
from qmamba.micro.sweep import sweep, world_dirs


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


def test_a_recipe_with_its_own_lm_shape_and_world(tmp_path):
    from qmamba.data.synth.manifest import SynthManifest
    from qmamba.models.mamba_lm import MambaLMConfig

    out = tmp_path / "sweep"
    recipe = {"sft_steps": 1, "lm": {"ssm_cfg": {"d_state": 8}}, "world": {"max_objects": 2, "grid": 3}}
    assert sweep(out, {"wide": recipe}, SHRUNK, seed=0, jobs=1, device="cpu") == []
    world_dir, tok_dir = world_dirs(out, recipe["world"])
    assert world_dir != out / "world" and tok_dir.is_dir() and not (out / "world").exists()
    config = SynthManifest.load(world_dir).config
    assert config["max_objects"] == 2 and config["grid"] == 3 and config["image_size"] == SHRUNK.world["image_size"]
    lm = MambaLMConfig(**json.loads((out / "wide" / "mamba" / "config.json").read_text()))
    assert lm.ssm_cfg["d_state"] == 8 and lm.d_model == SHRUNK.lm["d_model"]
    result = json.loads((out / "wide" / "result.json").read_text())
    assert result["overrides"] == recipe and result["lm"]["config"]["sft_steps"] == 1


@pytest.mark.parametrize("recipe, named", [({"sft_stepz": 1}, "'sft_stepz'"), ({"lm": {"d_stat": 8}}, "'d_stat'"),
                                           ({"world": {"max_object": 3}}, "'max_object'"),
                                           ({"lm": {"ssm_cfg": {"layer": "Mamba3"}}}, "Mamba3"),
                                           ({"packing": "tight"}, "packing='tight'")])
def test_an_unknown_setting_is_refused_before_anything_is_drawn(tmp_path, recipe, named):
    with pytest.raises(ConfigError, match=f"recipe 'bad'.*{named}"):
        sweep(tmp_path / "sweep", {"bad": recipe}, SHRUNK, seed=0, jobs=1, device="cpu")
    assert not (tmp_path / "sweep").exists()


def crowded_then_fine(out, name, overrides, size, seed, device):
    """A stand-in for ``train_recipe`` (run in the sweep's processes): "tight" runs out of GPU memory the first
    time, "broken" fails for another reason, the others succeed."""
    marker = out / f"{name}.tried"
    first = not marker.exists()
    with marker.open("a") as f:
        f.write("x")  # one mark per try
    if name == "broken":
        raise ValueError("a bug, not memory")
    if name == "tight" and first:
        raise RuntimeError("CUDA out of memory. Tried to allocate 50.00 MiB")
    return {"seconds": 0.0}


def test_a_recipe_out_of_memory_beside_the_others_is_tried_again_alone(tmp_path, monkeypatch):
    import qmamba.micro.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "prepare", lambda *a, **k: None)  # no world needed by the stand-in
    out = tmp_path / "sweep"
    out.mkdir()
    failed = sweep(out, {"tight": {}, "broken": {}, "fine": {}}, SHRUNK, jobs=3, train=crowded_then_fine)
    assert failed == ["broken"]  # tried once: only memory is worth a second try
    tries = {p.stem: len(p.read_text()) for p in out.glob("*.tried")}
    assert tries == {"tight": 2, "broken": 1, "fine": 1}
