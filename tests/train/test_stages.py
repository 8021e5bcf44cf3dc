"""The stage table: every stage trains known components and reads a data format the dataset writes;
a stage's name picks the same table row for the config, the freezing and the data."""

from __future__ import annotations

import pytest

from qmamba.errors import ConfigError
from qmamba.stages import COMPONENTS, DATA_FORMATS, STAGES, apply_stage
from qmamba.train.config import parse_config


def test_every_stage_trains_known_components_and_reads_a_known_format():
    assert list(STAGES) == ["align", "finetune", "full"]
    for name, stage in STAGES.items():
        assert stage.name == name and stage.trains and set(stage.trains) <= set(COMPONENTS)
        assert stage.data_format in DATA_FORMATS
    assert STAGES["align"].data_format == "align" and STAGES["full"].data_format == "finetune"


def test_a_stage_config_takes_its_defaults_from_the_table():
    cfg = parse_config({"model": {"preset": "qmamba-256"}, "stages": [{"name": n} for n in STAGES]}, "t")
    for stage in cfg.stages:
        assert (stage.lr, stage.global_batch_size) == (STAGES[stage.name].lr, STAGES[stage.name].global_batch_size)


def test_unknown_stages_are_named():
    with pytest.raises(ConfigError, match="stage name 'pretrain'"):
        parse_config({"model": {"preset": "qmamba-256"}, "stages": [{"name": "pretrain"}]}, "t")
    with pytest.raises(ConfigError, match=r"stage='pretrain'; expected one of \['align', 'finetune', 'full'\]"):
        apply_stage(object(), "pretrain")
