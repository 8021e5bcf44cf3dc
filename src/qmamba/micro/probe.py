"""A linear probe of a frozen vision encoder: can each object's shape, colour and position be read off its
patch features by a linear map? (A gate of ``qmamba micro build``: what the encoder does not keep linearly,
a connector has a hard time recovering.)

Features: the encoder's patch features (b, p, d) averaged over the patches whose centres fall in each grid
cell of the scene, so a cell's feature is a fixed linear map of the patch features: (b, g*g, d). One
multinomial logistic regression per target, shared by every cell, is fitted on training scenes and scored
on held-out evaluation scenes:

* ``shape``: the cell's content among empty, text and the shapes of ``vocab.SHAPES``;
* ``color``: among empty and the palette colours;
* ``position``: whether the cell is occupied (so every object is found in its cell and nothing elsewhere).

Accuracies: shape over cells holding a shape, colour over occupied cells, position over all cells. The
probe standardises features with the training statistics and trains with AdamW full-batch (seeded).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from qmamba.data.image import MultiImageTransform, load_image
from qmamba.data.synth import vocab
from qmamba.data.synth.scene import Scene
from qmamba.errors import InputError

SHAPE_CLASSES = ("empty", "text", *vocab.SHAPES)
COLOR_CLASSES = ("empty", *vocab.COLOR_NAMES)


@dataclass(frozen=True)
class ProbeConfig:
    """How the probe is fitted: full-batch AdamW ``steps`` at ``lr`` with ``weight_decay``."""

    steps: int = 300
    lr: float = 0.05
    weight_decay: float = 1e-4
    seed: int = 0


def cell_pool(feats: torch.Tensor, image_size: int, grid: int) -> torch.Tensor:
    """(b, p, d) raster-order patch features -> (b, grid*grid, d): the mean over the patches whose centre
    pixel lies in each cell (row-major cells, as ``scene.cell_box``)."""
    b, p, d = feats.shape
    side = round(p ** 0.5)
    if side * side != p:
        raise InputError(f"probe: {p} patches do not form a square grid")
    centres = (torch.arange(side) + 0.5) * image_size / side  # (side,) pixel centre of each patch row/col
    cell_of = (centres * grid / image_size).long().clamp(max=grid - 1)  # (side,)
    index = (cell_of[:, None] * grid + cell_of[None, :]).reshape(-1)  # (p,) cell of each patch
    weights = torch.zeros(grid * grid, p, dtype=feats.dtype)
    weights[index, torch.arange(p)] = 1.0
    weights /= weights.sum(1, keepdim=True).clamp(min=1)  # (g*g, p)
    return torch.einsum("cp,bpd->bcd", weights.to(feats.device), feats)  # (b, g*g, d)


def cell_labels(scene: Scene) -> tuple[list[int], list[int]]:
    """(shape class, colour class) per cell of ``scene``, row-major."""
    shapes, colors = [0] * scene.grid ** 2, [0] * scene.grid ** 2
    for o in scene.objects:
        cell = o.row * scene.grid + o.col
        shapes[cell] = 1 if o.text is not None else SHAPE_CLASSES.index(o.shape)
        colors[cell] = COLOR_CLASSES.index(o.color)
    return shapes, colors


@torch.no_grad()
def encode_scenes(encoder, image_root: Path, scenes: list[Scene], batch: int = 64) -> torch.Tensor:
    """(n, grid*grid, d) cell features of ``scenes`` (images under ``image_root``) from a frozen encoder."""
    transform = MultiImageTransform(encoder.config.transforms)
    device = next(encoder.parameters()).device
    out = []
    for k in range(0, len(scenes), batch):
        chunk = scenes[k:k + batch]
        pixels = transform([load_image(image_root / s.image) for s in chunk]).to(device)  # (b, 3, S, S)
        feats = encoder(pixels).float().cpu()  # (b, p, d)
        out.append(cell_pool(feats, chunk[0].image_size, chunk[0].grid))
    return torch.cat(out)


def fit_linear(x: torch.Tensor, y: torch.Tensor, n_classes: int, cfg: ProbeConfig) -> nn.Linear:
    """Multinomial logistic regression on (n, d) standardised features ``x`` and (n,) labels ``y``."""
    gen = torch.Generator().manual_seed(cfg.seed)
    head = nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.steps):
        loss = nn.functional.cross_entropy(head(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head


def probe_features(train: tuple, test: tuple, cfg: ProbeConfig | None = None) -> dict:
    """Fit and score the three probes. ``train`` / ``test``: (cell features (n, c, d), shape labels (n, c),
    colour labels (n, c)). Returns accuracies (and chance: the majority class of the training cells)."""
    cfg = cfg or ProbeConfig()
    (xa, sa, ca), (xb, sb, cb) = train, test
    xa, xb = xa.reshape(-1, xa.shape[-1]), xb.reshape(-1, xb.shape[-1])  # (n*c, d)
    mean, std = xa.mean(0), xa.std(0).clamp(min=1e-6)
    xa, xb = (xa - mean) / std, (xb - mean) / std
    sa, ca, sb, cb = sa.reshape(-1), ca.reshape(-1), sb.reshape(-1), cb.reshape(-1)
    every = lambda y: torch.ones_like(y, dtype=torch.bool)  # noqa: E731
    # target -> (train labels, test labels, classes, cells it is scored on: (train, test))
    targets = {"shape": (sa, sb, len(SHAPE_CLASSES), (sa >= 2, sb >= 2)),
               "color": (ca, cb, len(COLOR_CLASSES), (ca > 0, cb > 0)),
               "position": ((sa > 0).long(), (sb > 0).long(), 2, (every(sa), every(sb)))}
    result = {}
    for name, (ya, yb, n, (train_on, test_on)) in targets.items():
        pred = fit_linear(xa, ya, n, cfg)(xb).argmax(-1)  # (n*c,)
        result[name] = float((pred == yb)[test_on].float().mean())
        majority = torch.mode(ya[train_on]).values  # chance: the training cells' most frequent class
        result[f"{name}_chance"] = float((yb[test_on] == majority).float().mean())
    return result


def _load(scene_file: Path, limit: int | None) -> list[Scene]:
    scenes = [Scene.from_dict(s) for s in json.loads(scene_file.read_text(encoding="utf-8"))]
    return scenes[:limit] if limit else scenes


def probe_encoder(encoder, manifest, n_train: int | None = 2000, n_test: int | None = None,
                  test_task: str = "vqav2", cfg: ProbeConfig | None = None) -> dict:
    """Probe ``encoder`` (frozen; any device) on a synth world: fitted on its align scenes (the first
    ``n_train``), scored on the held-out scenes of evaluation set ``test_task``."""
    train_scenes = _load(manifest.path("scenes", "align"), n_train)
    test_scenes = _load(manifest.path("eval", test_task, "scenes"), n_test)
    sides = []
    for scenes, root in ((train_scenes, manifest.path("images")),
                         (test_scenes, manifest.path("eval", test_task, "image_folder"))):
        labels = [cell_labels(s) for s in scenes]
        sides.append((encode_scenes(encoder, root, scenes), torch.tensor([s for s, _ in labels]),
                      torch.tensor([c for _, c in labels])))
    return {**probe_features(*sides, cfg), "train_scenes": len(train_scenes), "test_scenes": len(test_scenes),
            "test_task": test_task}
