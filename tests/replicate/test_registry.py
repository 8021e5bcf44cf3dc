"""The experiment registry: the paper's query proportions, shared training runs, inference overrides that
the model configs accept, the run config each cell trains with, and the tier that cannot run yet."""

from __future__ import annotations

import json

import pytest

from qmamba.errors import ConfigError
from qmamba.models.connectors import connector_config
from qmamba.models.presets import get_preset
from qmamba.replicate.registry import EXPERIMENTS, build_registry, query_counts, select, sweep_counts
from qmamba.replicate.run import merged, run_config
from qmamba.replicate.tiers import TIERS, get_tier
from qmamba.utils.config import config_to_dict

TINY = TIERS["tiny"]


def test_query_counts_follow_the_papers_proportions():
    assert query_counts(729) == {128: 128, 256: 256, 512: 512, 729: 729}
    assert query_counts(64) == {128: 11, 256: 22, 512: 45, 729: 64}  # 64 * n / 729, rounded
    assert sweep_counts(64) == [4, 8, 11, 16, 22, 32, 45, 64]


def test_registry_covers_every_connector_and_ablation():
    reg = build_registry(TINY)
    assert tuple(reg) == EXPERIMENTS
    variants = {e: [c.variant for c in cells] for e, cells in reg.items()}
    assert variants["table1"] == ["cobra", "vlmamba-bsm", "vlmamba-bsm-forward", "vlmamba-bsm-backward",
                                  "vlmamba-csm", "mlmamba", "qformer", "qmamba-128", "qmamba-256",
                                  "qmamba-512", "qmamba-729"]
    assert variants["table2"] == ["local", "global"] and variants["table3"] == ["trained", "scratch", "none"]
    assert variants["table4"] == ["forward", "backward", "bidirectional", "csm"]
    cell = {(c.experiment, c.variant): c for cells in reg.values() for c in cells}
    # the same configuration is one training run: Table 2's local cell is Table 1's 256-proportion Q-Mamba
    assert cell["table2", "local"].train == cell["table1", "qmamba-256"].train == cell["table3", "trained"].train
    assert cell["table2", "local"].eval_key == cell["table1", "qmamba-256"].eval_key
    # Table 4: one training, three evaluations
    t4 = [cell["table4", v] for v in ("forward", "backward", "bidirectional")]
    assert len({c.train.key for c in t4}) == 1 and len({c.eval_key for c in t4}) == 3
    assert cell["table1", "qmamba-729"].train.preprocess_from.key == "vlmamba-bsm"
    assert cell["table4", "csm"].train.preprocess_from.key == "vlmamba-csm"
    assert cell["table3", "scratch"].train.preprocess_from is None
    assert cell["table3", "none"].train.connector["preprocess"] is None


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_cell_builds_a_valid_connector_config(experiment):
    """Training and inference overrides parse into the preset's connector config (bad scans would raise)."""
    for c in build_registry(TINY)[experiment]:
        base = config_to_dict(get_preset(c.train.preset).connector)
        cfg = connector_config(merged({**base, **c.train.connector}, c.infer))
        if "n_queries" in c.train.connector:
            assert cfg.n_queries == c.visual_tokens
        if c.infer.get("preprocess"):
            assert cfg.preprocess.active_scans == c.infer["preprocess"]["active_scans"]
            assert cfg.preprocess.scan == "bsm" and cfg.n_queries == 64


def test_run_config_is_the_quickstart_recipe_at_the_tiers_sizes(tmp_path):
    cell = {c.variant: c for c in build_registry(TINY)["table1"]}["qmamba-256"]
    cfg = run_config(tmp_path, TINY, cell.train, 2, "cpu", tmp_path / "vl" / "model")
    assert cfg["model"]["preset"] == "micro-qmamba-32" and cfg["model"]["connector"]["n_queries"] == 22
    assert cfg["model"]["preprocess_init"] == str(tmp_path / "vl" / "model")
    assert (cfg["model"]["llm"], cfg["model"]["vision"]) == (TINY.llm, TINY.vision)
    assert [s["name"] for s in cfg["stages"]] == ["align", "finetune"]
    assert cfg["run"]["seed"] == 2 and cfg["run"]["output_dir"].endswith("train/qmamba-22-local-trained/seed2")
    json.dumps(cfg)  # what the resolved config will hold


def test_select_and_the_small_tier():
    reg = build_registry(TINY)
    assert [c.variant for c in select(reg, ["table1"], ["cobra", "qformer"])] == ["cobra", "qformer"]
    with pytest.raises(ConfigError, match="table9"):
        select(reg, ["table9"], None)
    with pytest.raises(ConfigError, match="cobra-xl"):
        select(reg, ["table1"], ["cobra-xl"])
    with pytest.raises(ConfigError, match="small.*cannot run yet.*micro build --size small"):
        get_tier("small").check()
    assert merged({"a": 1, "p": {"x": 1, "y": 2}}, {"p": {"y": 3}}) == {"a": 1, "p": {"x": 1, "y": 3}}


def test_a_directory_keeps_one_tiers_settings(tmp_path):
    import dataclasses

    from qmamba.replicate.driver import _check_tier

    _check_tier(tmp_path, TINY)
    _check_tier(tmp_path, TINY)  # the same settings: fine
    with pytest.raises(ConfigError, match="max_steps: None there, 5 now"):
        _check_tier(tmp_path, dataclasses.replace(TINY, max_steps=5))
