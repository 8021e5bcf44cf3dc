"""Run configs: every shipped YAML parses, overrides reach nested fields, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmamba.errors import ConfigError
from qmamba.models.presets import PRESETS
from qmamba.train.config import apply_overrides, load_config, parse_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_parses(path):
    cfg = load_config(path)
    assert cfg.model.preset in PRESETS
    assert [s.name for s in cfg.stages][:1] in (["align"], ["finetune"])
    for stage in cfg.stages:
        assert stage.lr > 0 and stage.global_batch_size > 0 and stage.sources


def test_there_are_configs_for_the_paper_runs():
    names = {p.stem for p in CONFIGS}
    assert {"qmamba-256", "cobra", "vlmamba-bsm", "tiny-cpu"} <= names


def test_stage_defaults_follow_the_paper():
    cfg = parse_config({"model": {"preset": "qmamba-256"}, "stages": [{"name": "align"}, {"name": "finetune"}]}, "t")
    align, finetune = cfg.stages
    assert (align.lr, align.global_batch_size, finetune.lr, finetune.global_batch_size) == (1e-4, 256, 2e-5, 128)
    assert align.optimizer == "radam" and align.warmup_ratio == 0.03 and align.max_grad_norm == 1.0


def test_dotted_overrides():
    data = {"model": {"preset": "cobra"}, "stages": [{"name": "align"}, {"name": "finetune", "lr": 1e-5}],
            "run": {"output_dir": "a"}}
    out = apply_overrides(data, ["stages.1.lr=3e-5", "run.output_dir=b", "model.connector.n_queries=64",
                                 "stages.0.sources=[{path: x.json}]"])
    assert out["stages"][1]["lr"] == 3e-5 and out["run"]["output_dir"] == "b"
    assert out["model"]["connector"] == {"n_queries": 64} and out["stages"][0]["sources"] == [{"path": "x.json"}]
    assert data["run"]["output_dir"] == "a"  # the input is not modified


@pytest.mark.parametrize("data,match", [
    ({"model": {}, "stages": [{"name": "pretrain"}]}, "stage name 'pretrain'"),
    ({"model": {}, "stages": [{"name": "align", "micro_batchsize": 1}]},
     "'micro_batchsize' \\(did you mean 'micro_batch_size'\\?\\)"),
    ({"model": {"presett": "x"}, "stages": []}, "presett"),
    ({"stages": []}, "missing section 'model'"),
    ({"model": {}, "stages": [{"name": "align", "optimizer": "sgd"}]}, "optimizer='sgd'"),
])
def test_config_mistakes_are_named(data, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(data, "test.yaml")


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["stages.1.lr"])
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides({"stages": [{}]}, ["stages.3.lr=1"])
