"""The linear probe of a frozen encoder: cell pooling, the probe on features that do and do not hold the
answer, and the probe of the shipped micro encoder on a tiny world end to end."""

from __future__ import annotations

from pathlib import Path

import torch
from micro_assets_testkit import tiny_world

from qmamba.micro.probe import COLOR_CLASSES, SHAPE_CLASSES, ProbeConfig, cell_pool, probe_encoder, probe_features
from qmamba.models.vision import VisionEncoder

SHIPPED = Path(__file__).parents[2] / "src" / "qmamba" / "assets" / "micro" / "siglip"


def test_cell_pool_averages_the_patches_of_each_cell():
    feats = torch.arange(64, dtype=torch.float32).reshape(1, 64, 1)  # 8 x 8 patches, value = raster index
    pooled = cell_pool(feats, image_size=64, grid=3)  # (1, 9, 1); patch centres 4, 12, ..., 60 px
    # cell rows/cols of the 8 patch centres: 0,0,0,1,1,2,2,2 (21-px cells)
    rows = {0: [0, 1, 2], 1: [3, 4], 2: [5, 6, 7]}
    for r in range(3):
        for c in range(3):
            expect = torch.tensor([8 * i + j for i in rows[r] for j in rows[c]], dtype=torch.float32).mean()
            assert torch.isclose(pooled[0, 3 * r + c, 0], expect), (r, c)


def _labels(n: int, cells: int, gen: torch.Generator):
    shapes = torch.randint(0, len(SHAPE_CLASSES), (n, cells), generator=gen)
    colors = torch.where(shapes > 0, torch.randint(1, len(COLOR_CLASSES), (n, cells), generator=gen), 0)
    return shapes, colors


def test_the_probe_reads_features_that_hold_the_labels_and_not_others():
    gen = torch.Generator().manual_seed(0)
    sides, project = [], torch.randn(len(SHAPE_CLASSES) + len(COLOR_CLASSES), 32, generator=gen)
    for n in (300, 100):
        shapes, colors = _labels(n, 9, gen)
        x = torch.cat([torch.nn.functional.one_hot(shapes, len(SHAPE_CLASSES)),
                       torch.nn.functional.one_hot(colors, len(COLOR_CLASSES))], -1).float()
        x = x @ project + 0.05 * torch.randn(n, 9, 32, generator=gen)
        sides.append((x, shapes, colors))
    good = probe_features(*sides, ProbeConfig(steps=200))
    assert min(good["shape"], good["color"], good["position"]) >= 0.95, good
    noise = [(torch.randn(x.shape, generator=gen), s, c) for x, s, c in sides]
    bad = probe_features(*noise, ProbeConfig(steps=200))
    assert max(bad["shape"], bad["color"]) < 0.5, bad  # 7 and 8 classes: no better than a guess
    assert bad["shape_chance"] < 0.3


def test_the_probe_of_the_shipped_micro_encoder_runs_on_a_tiny_world(tmp_path_factory):
    encoder = VisionEncoder.from_pretrained(SHIPPED)
    result = probe_encoder(encoder, tiny_world(tmp_path_factory), n_train=48, test_task="vqav2",
                           cfg=ProbeConfig(steps=100))
    assert result["train_scenes"] == 48 and result["test_scenes"] == 6
    for key in ("shape", "color", "position"):
        assert 0.0 <= result[key] <= 1.0 and f"{key}_chance" in result
    assert result["position"] > result["position_chance"], result  # the encoder sees where objects are
