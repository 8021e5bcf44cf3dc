"""Every connector: shapes (b, 729, d_vision) -> (b, n_tokens, d_model), gradients reaching every
parameter, the local attention mask of the paper, scan-order semantics, causality of Q-Mamba."""

from __future__ import annotations

import pytest
import torch
from testing_utils import assert_close

from qmamba.models.connectors import build_connector, connector_config
from qmamba.models.connectors.attention import attention_reference, local_attention_mask
from qmamba.models.mamba_lm import MambaLM, MambaLMConfig
from qmamba.models.multiscan import scan_order
from qmamba.ops.local_attention import use_local_attention

DV, DM, P = 16, 24, 729
QM = {"type": "qmamba", "n_queries": 32, "width": 32, "n_layer": 2, "n_heads": 4}
CONFIGS = {
    "mlp-linear": ({"type": "mlp", "arch": "linear"}, P),
    "mlp-gelu": ({"type": "mlp", "arch": "gelu-mlp"}, P),
    "mlp-fused": ({"type": "mlp", "arch": "fused-gelu-mlp"}, P),
    "vlmamba-mlp": ({"type": "vlmamba", "variant": "mlp"}, P),
    "vlmamba-vss-mlp-bsm": ({"type": "vlmamba", "variant": "vss-mlp", "scan": "bsm"}, P),
    "vlmamba-vss-l2-csm": ({"type": "vlmamba", "variant": "vss-l2", "scan": "csm"}, P),
    "mlmamba": ({"type": "mlmamba", "d_state": 8, "headdim": 8, "chunk_size": 64}, P),
    "qmamba-local": (QM, 32),
    "qmamba-global-preprocess": ({**QM, "attention": "global", "preprocess": {"type": "vlmamba"}}, 32),
    "qmamba-729": ({**QM, "n_queries": 729, "n_layer": 1}, 729),
    "qmamba-1000": ({**QM, "n_queries": 1000, "n_layer": 1}, 1000),
    "qformer": ({**QM, "type": "qformer"}, 32),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_shape_and_gradients(name):
    cfg, n_tokens = CONFIGS[name]
    conn = build_connector(cfg, DV, DM)
    x = torch.randn(2, P, DV)
    y = conn(x)
    assert y.shape == (2, n_tokens, DM)
    assert conn.num_tokens(P) == n_tokens
    (y * torch.randn_like(y)).sum().backward()
    dead = [n for n, p in conn.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient reaches {dead}"
    conn.zero_grad(set_to_none=True)
    with use_local_attention("absorbed"):
        (conn(x) * torch.randn_like(y)).sum().backward()
    dead = [n for n, p in conn.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert sorted(dead) == sorted(n for n, _ in conn.named_parameters() if _unread_by_local_attention(cfg, n))


def _unread_by_local_attention(cfg: dict, name: str) -> bool:
    """Parameters whose gradient is exactly zero under the local mask, which the absorbed local attention does
    not read: k_proj.bias (it cancels in each slice's softmax) and, when every query reads one key (q >= p),
    everything that only makes the scores (q_proj, k_proj.weight, norm_xattn)."""
    if cfg.get("type") not in ("qmamba", "qformer") or cfg.get("attention", "local") != "local":
        return False
    one_key = cfg["n_queries"] >= P
    scores_only = ("xattn.q_proj.", "xattn.k_proj.weight", "norm_xattn.")
    return name.endswith("xattn.k_proj.bias") or (one_key and any(s in name for s in scores_only))


def _slices(q, k):
    m = local_attention_mask(q, k)
    return [m[i].nonzero().flatten().tolist() for i in range(q)]


def test_local_mask_matches_paper_figure_3():  # 4 queries, 9 keys: 3, 2, 2, 2 contiguous keys
    assert _slices(4, 9) == [[0, 1, 2], [3, 4], [5, 6], [7, 8]]


@pytest.mark.parametrize("q,k", [(128, 729), (256, 729), (512, 729), (729, 729), (4, 8), (3, 10)])
def test_local_mask_partitions_keys_in_order(q, k):
    s = _slices(q, k)
    assert [i for part in s for i in part] == list(range(k))  # contiguous, in raster order, every key exactly once
    base, extra = divmod(k, q)
    assert [len(x) for x in s] == [base + 1] * extra + [base] * (q - extra)


@pytest.mark.parametrize("q,k", [(10, 4), (1000, 729), (5, 3)])
def test_local_mask_more_queries_than_keys(q, k):
    assert _slices(q, k) == [[i * k // q] for i in range(q)]


def test_sdpa_with_mask_equals_written_out_attention():
    q, k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 20, 8), torch.randn(2, 3, 20, 8)
    mask = local_attention_mask(7, 20)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert_close(sdpa, attention_reference(q, k, v, mask), 1e-5)


def test_local_query_reads_only_its_own_patches():
    conn = build_connector({**QM, "n_queries": 9, "n_layer": 1, "ffn_mult": 0}, DV, DM).eval()
    x = torch.randn(1, 81, DV)
    x2 = x.clone()
    x2[:, 80] += 5.0  # last patch belongs to the last query only
    with torch.no_grad():
        d = (conn(x) - conn(x2)).abs().amax(-1)[0]
    assert torch.all(d[:-1] == 0) and d[-1] > 0


@pytest.mark.parametrize("kind,causal", [("qmamba", True), ("qformer", False)])
def test_query_mixer_causality(kind, causal):
    conn = build_connector({**QM, "type": kind, "n_queries": 8}, DV, DM).eval()
    x = torch.randn(1, 64, DV)
    with torch.no_grad():
        before = conn(x)
        conn.query[0, 5] += 1.0
        changed = (conn(x) - before).abs().amax(-1)[0] > 0
    assert changed[5:].all()
    assert (not changed[:5].any()) if causal else changed[:5].all()


def test_vlmamba_scan_orders_and_active_subset():
    assert scan_order("backward", 4, None).tolist() == [3, 2, 1, 0]
    assert scan_order("column_forward", 6, (2, 3)).tolist() == [0, 3, 1, 4, 2, 5]
    assert scan_order("column_backward", 6, (2, 3)).tolist() == [5, 2, 4, 1, 3, 0]
    full = build_connector({"type": "vlmamba", "variant": "vss-mlp", "scan": "bsm"}, DV, DM).eval()
    fwd = build_connector({"type": "vlmamba", "variant": "vss-mlp", "scan": "bsm", "active_scans": ["forward"]},
                          DV, DM).eval()
    bwd = build_connector({"type": "vlmamba", "variant": "vss-mlp", "scan": "bsm", "active_scans": ["backward"]},
                          DV, DM).eval()
    fwd.load_state_dict(full.state_dict())
    bwd.load_state_dict(full.state_dict())
    x = torch.randn(2, 49, DV)
    with torch.no_grad():
        vss = full.vss
        yf = vss(x, active=("forward",))
        yb = vss(x, active=("backward",))
        # the mean over directions is what both-direction inference gives
        assert_close(vss(x), (yf + yb) / 2, 1e-5)
        # the backward scan of x is the forward scan (with the backward parameters) of x reversed
        vss.scans[0].load_state_dict(vss.scans[1].state_dict())
        assert_close(vss(x, active=("forward",)).flip(1), vss(x.flip(1), active=("backward",)), 1e-5)
        assert not torch.allclose(fwd(x), bwd(x))


def _multiscan_by_gathers(vss, x, grid):
    """MultiScanMamba written out: every order an index gather there and back, the outputs averaged."""
    from qmamba.models.mamba1 import ssm_scan

    xz = vss.in_proj(x).transpose(1, 2)  # (b, 2 di, l)
    ys = []
    for name, params in zip(vss.orders, vss.scans):
        order = scan_order(name, xz.shape[-1], grid)
        xk, zk = xz[:, :, order].chunk(2, dim=1)
        ys.append(ssm_scan(params, xk, zk, None, None)[:, :, torch.argsort(order)])
    return vss.out_proj(torch.stack(ys).mean(0).transpose(1, 2))


@pytest.mark.parametrize("scan", ["bsm", "csm"])
@pytest.mark.parametrize("bias", [False, True])
def test_multiscan_matches_index_gathers_forward_and_backward(scan, bias, monkeypatch):
    from qmamba.models import multiscan
    from qmamba.ops.mamba_inner import length_multiple

    conn = build_connector({"type": "vlmamba", "variant": "vss-mlp", "scan": scan}, DV, DM).double()
    vss = conn.vss
    if bias:  # in_proj's bias makes the padding's x nonzero: the backward order must still meet it last
        vss.in_proj.bias = torch.nn.Parameter(torch.randn(vss.in_proj.out_features, dtype=torch.float64))
    monkeypatch.setattr("qmamba.ops.mamba_inner.padding.PAD_LENGTHS", True)  # on a CPU too
    seen, inner = [], multiscan.linear_channels_first
    monkeypatch.setattr(multiscan, "linear_channels_first", lambda h, lin: seen.append(h.shape[1]) or inner(h, lin))
    x = torch.randn(3, 49, DV, dtype=torch.float64, requires_grad=True)
    got, want = vss(x, (7, 7)), _multiscan_by_gathers(vss, x, (7, 7))
    m = length_multiple(3, vss.d_inner, vss.d_state, grad=True)
    assert seen == [-(-49 // m) * m if scan == "bsm" else 49]  # forward / backward orders alone run padded
    assert_close(got, want, 1e-6)  # the scan computes A = -exp(A_log) and the state in fp32
    params = [x, vss.in_proj.weight, vss.scans[-1].A_log, vss.out_proj.weight]
    g_got = torch.autograd.grad(got.square().sum(), params)
    g_want = torch.autograd.grad(want.square().sum(), params)
    for name, a, b in zip(("x", "in_proj", "A_log", "out_proj"), g_got, g_want):
        assert_close(a, b, 1e-6, name)


def test_qmamba_mamba_layers_load_from_a_mamba_lm(tmp_path):
    lm = MambaLM(MambaLMConfig(d_model=32, n_layer=3, vocab_size=50, ssm_cfg={"d_state": 16}))
    lm.save_pretrained(tmp_path, dtype=torch.float32)
    conn = build_connector(QM, DV, DM)
    conn.load_mamba_layers(tmp_path)
    for i, block in enumerate(conn.blocks):
        for k, v in block.mixer.state_dict().items():
            assert torch.equal(v, lm.backbone.layers[i].mixer.state_dict()[k]), k
        assert torch.equal(block.norm.weight, lm.backbone.layers[i].norm.weight)


def test_qmamba_refuses_an_lm_of_the_wrong_width(tmp_path):
    MambaLM(MambaLMConfig(d_model=48, n_layer=2, vocab_size=50)).save_pretrained(tmp_path)
    with pytest.raises(Exception, match="width 32"):
        build_connector(QM, DV, DM).load_mamba_layers(tmp_path)


def test_unknown_connector_type_and_field_are_named():
    with pytest.raises(Exception, match="connector.type='qmambo'"):
        connector_config({"type": "qmambo"})
    with pytest.raises(Exception, match="n_query"):
        connector_config({"type": "qmamba", "n_query": 3})
    with pytest.raises(Exception, match="attention='locale'"):
        connector_config({"type": "qmamba", "attention": "locale"})
