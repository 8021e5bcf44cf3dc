"""The weights path of the query connectors' cross-attention: the local mask's weights are exactly zero outside
each query's slice and every row sums to 1; it gives the SDPA path's output; switching the mask equals a model
built with the other mask; the maps of ``qmamba viz attention`` (query groups, blocks, each map summing to 1)."""

from __future__ import annotations

import pytest
import torch
from testing_utils import assert_close

from qmamba.errors import ConfigError, InputError
from qmamba.models.connectors import build_connector
from qmamba.models.connectors.attention import CrossAttention, local_attention_mask
from qmamba.viz.attention import masks_to_draw, query_attention_maps, query_groups, resolve_blocks

DV, DM = 16, 24
QM = {"type": "qmamba", "n_queries": 9, "width": 32, "n_layer": 2, "n_heads": 4}


@pytest.mark.parametrize("q,p", [(9, 81), (4, 10), (12, 9)])
def test_local_weights_are_zero_outside_each_slice_and_rows_sum_to_one(q, p):
    conn = build_connector({**QM, "n_queries": q}, DV, DM).eval()
    with torch.no_grad():
        _, weights = conn.forward_with_weights(torch.randn(2, p, DV))
    outside = ~local_attention_mask(q, p)  # (q, p)
    assert len(weights) == QM["n_layer"]
    for w in weights:
        assert w.shape == (2, QM["n_heads"], q, p)
        assert torch.all(w[..., outside] == 0), f"max weight outside the slices {w[..., outside].abs().max()}"
        assert torch.all(w[..., ~outside] > 0)
        assert_close(w.sum(-1), torch.ones(2, QM["n_heads"], q), 1e-6, "row sums")


@pytest.mark.parametrize("masked", [False, True])
def test_cross_attention_weights_path_equals_sdpa(masked):
    attn = CrossAttention(32, DV, 4).eval()
    x, kv = torch.randn(2, 7, 32), torch.randn(2, 20, DV)
    mask = local_attention_mask(7, 20) if masked else None
    with torch.no_grad():
        y, w = attn(x, kv, mask, return_weights=True)
        assert_close(y, attn(x, kv, mask), 1e-5, "output")
    assert w.shape == (2, 4, 7, 20)


@pytest.mark.parametrize("cfg", [QM, {**QM, "attention": "global", "preprocess": {"type": "vlmamba", "d_state": 8}},
                                 {**QM, "type": "qformer"}], ids=["qmamba-local", "qmamba-global-pre", "qformer"])
def test_connector_weights_path_equals_forward(cfg):
    conn = build_connector(cfg, DV, DM).eval()
    x = torch.randn(2, 36, DV)
    with torch.no_grad():
        y, _ = conn.forward_with_weights(x)
        assert_close(y, conn(x), 1e-5, "forward_with_weights vs forward")


def test_switching_the_mask_equals_a_model_built_with_the_other_mask():
    local = build_connector(QM, DV, DM).eval()
    glob = build_connector({**QM, "attention": "global"}, DV, DM).eval()
    glob.load_state_dict(local.state_dict())
    x = torch.randn(1, 81, DV)
    with torch.no_grad():
        assert_close(local.forward_with_weights(x, attention="global")[0], glob(x), 1e-5, "local run as global")
        assert_close(glob.forward_with_weights(x, attention="local")[0], local(x), 1e-5, "global run as local")
        with pytest.raises(ConfigError, match="attention='diagonal'"):
            local.forward_with_weights(x, attention="diagonal")


def test_query_groups_blocks_and_masks():
    assert query_groups(4) == [(0, 1), (1, 2), (2, 3), (3, 4)]  # per query for small q
    assert query_groups(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert len(query_groups(128)) == 8 and query_groups(128)[-1] == (112, 128)
    with pytest.raises(InputError, match="5 query groups asked for 4 queries"):
        query_groups(4, 5)
    with pytest.raises(InputError, match="0 query groups asked for 4 queries"):
        query_groups(4, 0)
    assert resolve_blocks([0, 5, -1, 23], 24) == [0, 5, 23]
    assert resolve_blocks(None, 2) == [0, 1]
    with pytest.raises(InputError, match=r"block\(s\) \[2\] out of range: the connector has 2 blocks"):
        resolve_blocks([0, 2], 2)
    assert masks_to_draw("local", None) == ["local"]
    assert masks_to_draw("global", "both") == ["global", "local"]


def test_maps_of_a_tiny_model_sum_to_one_and_local_ones_stay_in_their_rows():
    from qmamba.models.multimodal import MultimodalModel
    from qmamba.models.presets import get_preset

    model = MultimodalModel(get_preset("tiny-qmamba-128")).eval()  # 4 queries, 2 blocks, a 4 x 4 patch grid
    maps = query_attention_maps(model, torch.randn(1, 3, 32, 32), blocks=[-1], masks=["local", "global"])
    assert maps.blocks == [1] and maps.grid == (4, 4) and maps.maps.shape == (2, 1, 4, 4, 4)
    assert_close(maps.maps.sum((-1, -2)), torch.ones(2, 1, 4), 1e-6, "map sums")
    local = maps.maps[0, 0]  # (groups, rows, cols): query i owns patch row i of the raster order
    for i in range(4):
        others = [r for r in range(4) if r != i]
        assert torch.all(local[i, i] > 0) and torch.all(local[i, others] == 0)
