"""Learning-rate schedule and weight-decay groups, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from qmamba.models.multimodal import MultimodalModel
from qmamba.models.presets import get_preset
from qmamba.train.optim import param_groups, warmup_cosine


def test_warmup_then_cosine_by_hand():
    total, ratio = 100, 0.03  # warmup = ceil(3) = 3 steps
    assert [warmup_cosine(s, total, ratio) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert warmup_cosine(3, total, ratio) == pytest.approx(1.0)
    mid = 3 + (total - 3) / 2
    assert warmup_cosine(int(mid), total, ratio) == pytest.approx(0.5 * (1 + math.cos(math.pi * (int(mid) - 3) / 97)))
    assert warmup_cosine(total, total, ratio) == pytest.approx(0.0)


def test_no_weight_decay_on_norms_biases_and_ssm_parameters():
    model = MultimodalModel(get_preset("tiny-qmamba-128"))
    groups = param_groups(model, weight_decay=0.1)
    no_decay = {id(p) for p in groups[1]["params"]}
    names = {n: id(p) in no_decay for n, p in model.named_parameters()}
    assert names["llm.backbone.layers.0.mixer.A_log"] and names["llm.backbone.layers.0.mixer.D"]
    assert names["llm.backbone.layers.0.norm.weight"] and names["llm.backbone.layers.0.mixer.conv1d.bias"]
    assert names["connector.blocks.0.mixer.A_log"]
    assert not names["llm.backbone.layers.0.mixer.in_proj.weight"] and not names["connector.proj.weight"]
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    assert param_groups(frozen, 0.1)[0]["params"] == []
