"""Local cross-attention: the slices agree with the connectors' mask; the absorbed algorithm equals the
reference (k, v projected, dense masked SDPA) in float64, float32 and bfloat16, forward and every gradient;
the cross-attention module and a whole Q-Mamba projector give the same outputs and gradients on either."""

from __future__ import annotations

import pytest
import torch
from testing_utils import assert_close, rel_err

from qmamba.errors import ConfigError
from qmamba.models.connectors import build_connector
from qmamba.models.connectors.attention import CrossAttention, local_attention_mask
from qmamba.ops.local_attention import (
    local_attention,
    local_attention_absorbed,
    local_attention_naive,
    local_slices,
    use_local_attention,
)

SHAPES = [(128, 729), (8, 64), (64, 64), (100, 64), (7, 50), (100, 150)]  # (q, p): q > p, q == p, p % q != 0
NAMES = ("q", "kv", "k_weight", "k_bias", "v_weight", "v_bias")
D, DKV, H = 24, 20, 3


def _inputs(q: int, p: int, dtype: torch.dtype, b: int = 2) -> dict:
    """Random op inputs, each requiring grad; weights scaled so that the softmax is far from uniform."""
    g = torch.Generator().manual_seed(q * 1000 + p)
    shapes = {"q": (b, q, D), "kv": (b, p, DKV), "k_weight": (D, DKV), "k_bias": (D,), "v_weight": (D, DKV),
              "v_bias": (D,)}
    return {k: torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for k, s in shapes.items()}


def _run(fn, inputs: dict, grad_out: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """fn's output and the gradient of <output, grad_out> w.r.t. every input (None: the input is not read)."""
    out = fn(*inputs.values(), H)
    grads = torch.autograd.grad(out, list(inputs.values()), grad_out.to(out.dtype), allow_unused=True)
    return out, dict(zip(inputs, grads))


def _unread(q: int, p: int) -> set[str]:
    """Inputs whose gradient is exactly zero in the math: k_bias always (it cancels in each slice's softmax),
    and q, k_weight when every slice has one key (its weight is 1 whatever the scores)."""
    return {"k_bias"} | ({"q", "k_weight"} if local_slices(q, p).max_length == 1 else set())


# ------------------------------------------------------------------------------------------------ slices
def test_slices_agree_with_the_connectors_mask():
    shapes = [(q, p) for q in range(1, 41) for p in range(1, 61)] + SHAPES + [(256, 729), (512, 729), (1000, 729)]
    for q, p in shapes:
        s, mask = local_slices(q, p), local_attention_mask(q, p)
        assert torch.equal(s.mask(), mask), (q, p)
        rows = [mask[i].nonzero().flatten().tolist() for i in range(q)]
        assert rows == [list(range(a, a + n)) for a, n in zip(s.starts, s.lengths)], (q, p)
        assert s.owners().tolist() == list(s.starts), (q, p)
        grid, pad = s.padded_index().view(q, s.max_length), s.padding()  # (q, L), (q, L)
        assert s.max_length == -(-p // q) and s.uniform == (p % q == 0 and q <= p), (q, p)
        for i in range(q):  # each row: the query's keys, then its last key again where padded
            keys = list(range(s.starts[i], s.starts[i] + s.lengths[i]))
            assert grid[i].tolist() == keys + keys[-1:] * (s.max_length - len(keys)), (q, p, i)
            assert pad[i].tolist() == [False] * len(keys) + [True] * (s.max_length - len(keys)), (q, p, i)
    assert local_slices(128, 729).max_length == 6 and local_slices(729, 729).max_length == 1
    with pytest.raises(ConfigError, match="0 queries, 5 keys"):
        local_slices(0, 5)


# ----------------------------------------------------------------------------------- absorbed vs naive
@pytest.mark.parametrize("q,p", SHAPES)
def test_absorbed_equals_naive_float64(q, p):
    inputs = _inputs(q, p, torch.float64)
    grad_out = torch.randn(2, q, D, dtype=torch.float64)
    want, want_g = _run(local_attention_naive, inputs, grad_out)
    got, got_g = _run(local_attention_absorbed, inputs, grad_out)
    assert_close(got, want, 1e-12, "output")
    unread = _unread(q, p)
    for name in NAMES:
        if name in unread:  # not read by the absorbed op; the reference's gradient is rounding noise
            assert got_g[name] is None, name
            assert want_g[name].abs().max() <= 1e-12 * grad_out.abs().sum(), (name, want_g[name].abs().max())
        else:
            assert_close(got_g[name], want_g[name], 1e-12, f"grad {name}")


@pytest.mark.parametrize("q,p", SHAPES)
def test_absorbed_in_float32(q, p):
    ref_inputs = _inputs(q, p, torch.float32)
    inputs = {k: v.detach().clone().requires_grad_() for k, v in ref_inputs.items()}
    grad_out = torch.randn(2, q, D)
    want, want_g = _run(local_attention_naive, ref_inputs, grad_out)
    got, got_g = _run(local_attention_absorbed, inputs, grad_out)
    assert_close(got, want, 1e-5, "output")
    for name in set(NAMES) - _unread(q, p):
        assert_close(got_g[name], want_g[name], 1e-5, f"grad {name}")


@pytest.mark.parametrize("q,p", SHAPES)
def test_absorbed_in_bfloat16(q, p):
    """Against the float64 reference, the absorbed op's bf16 output and gradients are within twice the bf16
    reference's own relative error (or 5e-3), and within 3e-2: bf16 rounds the products in the two orders
    differently, neither is the more exact."""
    ref_inputs = _inputs(q, p, torch.float64)
    grad_out = torch.randn(2, q, D, dtype=torch.float64)
    want, want_g = _run(local_attention_naive, ref_inputs, grad_out)
    low = {}
    for fn in (local_attention_naive, local_attention_absorbed):
        inputs = {k: v.detach().to(torch.bfloat16).requires_grad_() for k, v in ref_inputs.items()}
        out, grads = _run(fn, inputs, grad_out)
        assert out.dtype == torch.bfloat16 and all(g is None or g.dtype == torch.bfloat16 for g in grads.values())
        low[fn] = {"output": out, **grads}
    for name in ["output", *sorted(set(NAMES) - _unread(q, p))]:
        want_x = want if name == "output" else want_g[name]
        err = rel_err(low[local_attention_absorbed][name], want_x)
        bound = min(max(2 * rel_err(low[local_attention_naive][name], want_x), 5e-3), 3e-2)
        assert err <= bound, f"{name}: absorbed bf16 rel err {err:.3g} > {bound:.3g}"


def test_the_algorithm_switch():
    inputs = {k: v.detach() for k, v in _inputs(7, 50, torch.float32).items()}
    assert torch.equal(local_attention(*inputs.values(), H), local_attention_naive(*inputs.values(), H))  # default
    with use_local_attention("absorbed"):
        assert torch.equal(local_attention(*inputs.values(), H), local_attention_absorbed(*inputs.values(), H))
    with use_local_attention("naive"):
        assert torch.equal(local_attention(*inputs.values(), H), local_attention_naive(*inputs.values(), H))
    with pytest.raises(ConfigError, match="'flash'"):
        with use_local_attention("flash"):
            pass


def test_index_made_in_inference_mode_serves_a_later_backward():
    inputs = _inputs(13, 5, torch.float32)  # q > p: the op gathers each query's key by a cached index
    with torch.inference_mode():
        local_attention_absorbed(*[v.detach() for v in inputs.values()], H)
    out, grads = _run(local_attention_absorbed, inputs, torch.ones(2, 13, D))
    assert grads["kv"] is not None and torch.isfinite(grads["kv"]).all()


# ---------------------------------------------------------------------------------- module and projector
def test_cross_attention_local_equals_the_mask_paths():
    attn = CrossAttention(D, DKV, H).double()
    x, kv = torch.randn(2, 7, D, dtype=torch.float64), torch.randn(2, 50, DKV, dtype=torch.float64)
    mask = local_attention_mask(7, 50)
    y = attn(x, kv, local=True)
    assert_close(y, attn(x, kv, mask), 1e-12, "local vs SDPA with the dense mask")
    y_w, w = attn(x, kv, local=True, return_weights=True)
    assert_close(y_w, y, 1e-12, "weights path")
    assert torch.all(w[..., ~mask] == 0) and torch.all(w[..., mask] > 0)
    with pytest.raises(ValueError, match="not both"):
        attn(x, kv, mask, local=True)


@pytest.mark.parametrize("q,p", [(8, 64), (7, 50), (12, 9)])
def test_projector_equals_the_reference_path(q, p):
    """A small Q-Mamba (local attention, VL-Mamba preprocessing) on the same weights: output and every
    parameter's gradient equal with the absorbed op and with the reference (today's dense SDPA path)."""
    cfg = {"type": "qmamba", "n_queries": q, "width": 32, "n_layer": 2, "n_heads": 4,
           "preprocess": {"type": "vlmamba", "d_state": 8}}
    conn = build_connector(cfg, 16, 40)
    x = torch.randn(2, p, 16)

    def run():
        conn.zero_grad(set_to_none=True)
        y = conn(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        return y.detach(), {n: t.grad for n, t in conn.named_parameters()}

    with use_local_attention("naive"):
        want, want_g = run()
    with use_local_attention("absorbed"):
        got, got_g = run()
    assert_close(got, want, 1e-5, "projector output")
    with torch.no_grad():
        assert_close(conn.forward_with_weights(x)[0], want, 1e-5, "weights path")
    unread = {"xattn.k_proj.bias"}  # as ``_unread``: the parameters the absorbed op does not read
    if local_slices(q, p).max_length == 1:
        unread |= {"xattn.q_proj.weight", "xattn.q_proj.bias", "xattn.k_proj.weight", "norm_xattn.weight"}
    for name, g in got_g.items():
        if any(name.endswith(u) for u in unread):
            assert g is None and want_g[name].abs().max() < 1e-6, (name, want_g[name].abs().max())
        else:
            assert_close(g, want_g[name], 1e-4, f"grad {name}")


# ---------------------------------------------------------------------------------------------------- GPU
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("q,p", [(128, 729), (64, 64), (100, 64)])
def test_absorbed_equals_naive_on_gpu(q, p, dtype):
    """The qmamba-128 shape (width 768, 12 heads, features 2560 wide) on the GPU: output and gradients against
    the float64 reference on the same device, as close as the reference in the same dtype is."""
    d, dkv, h, b = 768, 2560, 12, 2
    g = torch.Generator("cuda").manual_seed(0)
    shapes = {"q": (b, q, d), "kv": (b, p, dkv), "k_weight": (d, dkv), "k_bias": (d,), "v_weight": (d, dkv),
              "v_bias": (d,)}
    ref = {k: (torch.randn(s, generator=g, device="cuda", dtype=torch.float64) * (s[-1] ** -0.5 if k.endswith(
        "weight") else 1)).requires_grad_() for k, s in shapes.items()}
    grad_out = torch.randn(b, q, d, generator=g, device="cuda", dtype=torch.float64)

    def run(fn, inputs):
        out = fn(*inputs.values(), h)
        grads = torch.autograd.grad(out, list(inputs.values()), grad_out.to(out.dtype), allow_unused=True)
        return {"output": out, **dict(zip(inputs, grads))}

    want = run(local_attention_naive, ref)
    low = {fn: run(fn, {k: v.detach().to(dtype).requires_grad_() for k, v in ref.items()})
           for fn in (local_attention_naive, local_attention_absorbed)}
    for name in ["output", *sorted(set(NAMES) - _unread(q, p))]:
        err = rel_err(low[local_attention_absorbed][name], want[name])
        bound = max(2 * rel_err(low[local_attention_naive][name], want[name]), 1e-5 if dtype == torch.float32 else 5e-3)
        assert err <= bound, f"{name} {dtype}: absorbed rel err {err:.3g} > {bound:.3g}"


@gpu
@pytest.mark.gpu
def test_absorbed_in_a_cuda_graph_equals_eager():
    """Captured after one eager call (which makes the slice index and padding), replayed on new features."""
    from qmamba.infer.cuda_graph import Captured

    inputs = {k: v.detach().cuda() for k, v in _inputs(7, 50, torch.float32).items()}
    kv = inputs["kv"]
    args = list(inputs.values())
    graph = Captured(lambda: local_attention_absorbed(*args, H), True)
    kv.copy_(torch.randn_like(kv))
    assert_close(graph(), local_attention_absorbed(*args, H), 1e-6, "graph replay vs eager")
