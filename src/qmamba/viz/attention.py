"""Query attention maps: where each group of a query connector's queries (Q-Mamba, Q-Former) looks in the image.

For chosen blocks and contiguous groups of queries, the cross-attention weights over the image's patch grid,
averaged over heads and over the group's queries, under the model's own mask and, to compare, the other one
(the same weights run with the mask switched). The weights come from the connector's written-out attention
path (``QueryConnector.forward_with_weights``); its usual forward keeps SDPA.

    maps = query_attention_maps(model, pixel_values, blocks=[0, -1], n_groups=4, masks=["local", "global"])
    maps.maps                                   # (masks, blocks, groups, rows, cols); each map sums to 1
    attention_figure("runs/m/model", "scene.png", "maps.png", mask="both")   # the PNG of ``qmamba viz attention``
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from qmamba.errors import ConfigError, InputError
from qmamba.viz.heatmap import PANEL, draw_panels, overlay

QUERY_CONNECTORS = ("qmamba", "qformer")  # the connectors whose queries cross-attend to the patches
MAX_SINGLE_QUERIES = 8  # up to this many queries: one group per query


@dataclass
class AttentionMaps:
    masks: list[str]  # "local" / "global", the model's own first
    blocks: list[int]  # block indices, each in [0, n_layer)
    groups: list[tuple[int, int]]  # [start, end) of each contiguous query group
    grid: tuple[int, int]  # (rows, cols) of the patch grid
    maps: Tensor  # (masks, blocks, groups, rows, cols) float32: mean weight over heads and the group's queries


def query_groups(n_queries: int, n_groups: int | None = None) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges covering the queries in order; the first ``n_queries % n_groups`` take one
    more. Default: one per query up to ``MAX_SINGLE_QUERIES`` queries, else that many groups."""
    n = min(n_queries, MAX_SINGLE_QUERIES) if n_groups is None else n_groups
    if not 1 <= n <= n_queries:
        raise InputError(f"{n} query groups asked for {n_queries} queries; give 1 to {n_queries}")
    base, extra = divmod(n_queries, n)
    ends = np.cumsum([base + (i < extra) for i in range(n)]).tolist()
    return [(end - base - (i < extra), end) for i, end in enumerate(ends)]


def resolve_blocks(blocks: Sequence[int] | None, n_layer: int) -> list[int]:
    """Block indices (negative ones count from the end; None: every block) as [0, n_layer), in the order
    given, each once; an index out of range is an ``InputError`` naming the range."""
    if blocks is None:
        return list(range(n_layer))
    bad = [b for b in blocks if not -n_layer <= b < n_layer]
    if bad:
        raise InputError(f"block(s) {bad} out of range: the connector has {n_layer} blocks "
                         f"(0..{n_layer - 1}, or -{n_layer}..-1 from the end)")
    return list(dict.fromkeys(b % n_layer for b in blocks))


def masks_to_draw(own: str, mask: str | None) -> list[str]:
    """``mask`` None: the model's own; "local" / "global": that one; "both": the own one, then the other."""
    if mask is None:
        return [own]
    if mask == "both":
        return [own, "global" if own == "local" else "local"]
    if mask not in ("local", "global"):
        raise InputError(f"mask={mask!r}; expected local, global or both")
    return [mask]


def require_query_connector(connector_type: str | None, where: str) -> None:
    """A ``ConfigError`` naming the connector and the presets that have query attention, unless it has."""
    if connector_type in QUERY_CONNECTORS:
        return
    from qmamba.models.presets import PRESETS

    names = [n for n, make in PRESETS.items() if not n.startswith("tiny-") and make().connector.type
             in QUERY_CONNECTORS]
    what = f"the {connector_type} connector has" if connector_type else "no connector (not a multimodal model):"
    raise ConfigError(f"{where}: {what} no query cross-attention to draw; the presets with one: "
                      f"{', '.join(names)} (and their tiny- twins)")


@torch.no_grad()
def query_attention_maps(model, pixel_values: Tensor, blocks: Sequence[int] | None = None,
                         n_groups: int | None = None, masks: Sequence[str] | None = None) -> AttentionMaps:
    """The maps of one image: ``model`` a ``MultimodalModel`` with a query connector, pixel_values (1, 3k, S, S)
    as its transform makes them. ``masks``: default the connector's own."""
    conn = model.connector
    cfg = conn.cfg
    require_query_connector(cfg.type, "query_attention_maps")
    blocks = resolve_blocks(blocks, cfg.n_layer)
    groups = query_groups(cfg.n_queries, n_groups)
    masks = list(masks or [cfg.attention])
    rows, cols = model.vision.grid
    features = model.vision(pixel_values)  # (1, p, d_vision)
    features = features.to(next(conn.parameters()).dtype)
    if features.shape[1] != rows * cols:
        raise InputError(f"{features.shape[1]} visual features for a {rows} x {cols} patch grid")
    out = torch.empty(len(masks), len(blocks), len(groups), rows, cols)
    for m, mask in enumerate(masks):
        _, weights = conn.forward_with_weights(features, attention=mask)  # [(1, h, q, p)] * n_layer
        for j, b in enumerate(blocks):
            w = weights[b][0].float().mean(0)  # (q, p): mean over heads
            for g, (start, end) in enumerate(groups):
                out[m, j, g] = w[start:end].mean(0).view(rows, cols).cpu()  # (rows, cols)
    return AttentionMaps(masks, blocks, groups, (rows, cols), out)


def draw_attention_maps(maps: AttentionMaps, image: Image.Image, title: Sequence[str],
                        panel: int = PANEL) -> Image.Image:
    """One row per block: the image, then each mask's group panels (each scaled to its own maximum)."""
    rows = []
    for j, block in enumerate(maps.blocks):
        row = [(f"block {block}", image)]
        for m, mask in enumerate(maps.masks):
            for g, (start, end) in enumerate(maps.groups):
                values = maps.maps[m, j, g]
                top = float(values.max())
                name = f"q{start}" if end - start == 1 else f"q{start}-{end - 1}"
                row.append((f"{name} {mask} max {top:.2g}", overlay(image, (values / top).numpy(), panel)))
        rows.append(row)
    return draw_panels(rows, title, panel)


def display_image(pixel_values: Tensor, transform) -> Image.Image:
    """The image as the encoder sees it: the first tower's pixels (1, 3k, S, S) un-normalised to RGB."""
    cfg = transform.configs[0]
    mean = torch.tensor(cfg.mean)[:, None, None]
    std = torch.tensor(cfg.std)[:, None, None]
    x = (pixel_values[0, :3].float().cpu() * std + mean) / cfg.rescale_factor  # (3, S, S)
    return Image.fromarray(x.round().clamp(0, 255).byte().permute(1, 2, 0).numpy())


def attention_figure(model_dir: str | Path, image: str | Path, out: str | Path, blocks: Sequence[int] | None = None,
                     mask: str | None = None, n_groups: int | None = None, panel: int = PANEL,
                     device: str | None = "cpu") -> Path:
    """Load the model in ``model_dir``, draw its query attention maps for ``image`` into the PNG ``out``.

    The connector type is checked in config.json before any weights load."""
    from qmamba.data.image import MultiImageTransform, load_image
    from qmamba.models.checkpoints import require_dir
    from qmamba.models.multimodal import MultimodalModel
    from qmamba.utils.config import read_json
    from qmamba.utils.device import resolve_device

    model_dir = require_dir(model_dir, "viz attention")
    connector = read_json(model_dir / "config.json", "model config").get("connector") or {}
    require_query_connector(connector.get("type"), f"model {model_dir}")
    if panel < 32:
        raise InputError(f"panel size {panel} px is too small for a labelled panel; give at least 32")
    transform = MultiImageTransform(read_json(model_dir / "preprocessor_config.json", "image preprocessing")
                                    ["transforms"])
    dev = resolve_device(device)
    pixel_values = transform([load_image(image)]).to(dev)  # (1, 3k, S, S), before the weights load
    model = MultimodalModel.from_pretrained(model_dir, dtype=torch.float32, device=dev)
    cfg = model.connector.cfg
    maps = query_attention_maps(model, pixel_values, blocks, n_groups, masks_to_draw(cfg.attention, mask))
    title = [f"{model_dir.name}: {cfg.type}, {cfg.n_queries} queries, {cfg.n_layer} blocks, {cfg.attention} mask",
             f"image {Path(image).name}, {maps.grid[0]} x {maps.grid[1]} patches",
             "weight: mean over heads and group, panel / its max"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_attention_maps(maps, display_image(pixel_values, transform), title, panel).save(out)
    return out
