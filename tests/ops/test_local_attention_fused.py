"""The fused local-attention kernel (``ops/local_attention/fused.py``) against its reference, the absorbed
algorithm, and the dense-mask ground truth: Triton's interpreter on CPU, compiled on a GPU."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from testing_utils import assert_close, benchmark_script, rel_err  # noqa: E402

from qmamba.ops.local_attention import (  # noqa: E402
    local_attention,
    local_attention_absorbed,
    local_attention_naive,
    use_local_attention,
)
from qmamba.ops.local_attention.fused import fused_forward, local_attention_fused  # noqa: E402

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(b, q, p, d, d_kv, dtype=torch.float32, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = {"q": torch.randn(b, q, d, generator=g), "kv": torch.randn(b, p, d_kv, generator=g),
         "k_weight": torch.randn(d, d_kv, generator=g) / d_kv**0.5, "k_bias": torch.randn(d, generator=g),
         "v_weight": torch.randn(d, d_kv, generator=g) / d_kv**0.5,
         "v_bias": torch.randn(d, generator=g) if bias else None}
    return {k: None if v is None else v.to(DEVICE, dtype) for k, v in t.items()}


# (b, q, p, d, d_kv, heads): slices of uneven lengths, a head width and feature width that are not powers of two,
# more queries than one program's block, one image and several
SHAPES = [(2, 7, 50, 24, 20, 3), (1, 8, 64, 32, 40, 2), (2, 40, 150, 48, 72, 4), (3, 16, 36, 16, 16, 1)]


@pytest.mark.parametrize("b,q,p,d,d_kv,h", SHAPES)
@pytest.mark.parametrize("bias", [True, False], ids=["v_bias", "no_bias"])
def test_fused_equals_the_reference_in_float32(b, q, p, d, d_kv, h, bias):
    t = _inputs(b, q, p, d, d_kv, bias=bias, seed=q + p)
    got = fused_forward(t["q"], t["kv"], t["k_weight"], t["v_weight"], t["v_bias"], h)
    assert got.shape == (b, q, d) and got.dtype == torch.float32
    assert_close(got, local_attention_absorbed(*t.values(), h), 1e-5, "vs absorbed")
    assert_close(got, local_attention_naive(*t.values(), h), 1e-5, "vs naive")


def test_every_block_of_queries_gives_the_same_output():
    t = _inputs(2, 40, 150, 48, 72, seed=3)
    outs = [fused_forward(t["q"], t["kv"], t["k_weight"], t["v_weight"], t["v_bias"], 4, block_q=bq)
            for bq in (16, 32, 64)]
    for out in outs[1:]:
        assert_close(out, outs[0], 1e-6, "block_q")


def test_fused_gradients_are_the_absorbed_ones():
    t = _inputs(2, 7, 50, 24, 20)
    ref = {k: v.clone().requires_grad_() for k, v in t.items()}
    got = {k: v.clone().requires_grad_() for k, v in t.items()}
    grad_out = torch.randn(2, 7, 24, device=DEVICE)
    out_ref = local_attention_absorbed(*ref.values(), 3)
    out = local_attention_fused(*got.values(), 3)
    assert_close(out, out_ref, 1e-5, "output")
    (out_ref * grad_out).sum().backward()
    (out * grad_out).sum().backward()
    for name in ("q", "kv", "k_weight", "v_weight", "v_bias"):
        assert_close(got[name].grad, ref[name].grad, 1e-5, f"grad {name}")
    assert got["k_bias"].grad is None and ref["k_bias"].grad is None, "k_bias cancels: no gradient on either"


def test_one_key_a_query_and_the_switch_take_the_absorbed_path():
    t = _inputs(2, 12, 9, 24, 20)  # q > p: every query reads one key
    assert torch.equal(local_attention_fused(*t.values(), 3), local_attention_absorbed(*t.values(), 3))
    t = _inputs(2, 7, 50, 24, 20)
    with use_local_attention("fused"):
        assert torch.equal(local_attention(*t.values(), 3),
                           fused_forward(t["q"], t["kv"], t["k_weight"], t["v_weight"], t["v_bias"], 3))


def test_the_tile_sweep_checks_every_tile_against_the_dense_path(monkeypatch):
    tiles = benchmark_script("local_attention_tiles")
    shape = tiles.shapes("qmamba-128", tiny=True)
    with torch.inference_mode():
        us = tiles.measure_batch(2, shape, [(16, 32, 4)], torch.device(DEVICE), torch.float32)
    assert set(us) == {"dense mask", "absorbed", "fused q16 k32 w4"} and min(us.values()) > 0
    monkeypatch.setattr(tiles, "fused_forward", lambda *a, **k: torch.zeros(2, shape["q"], shape["d"]))
    with pytest.raises(SystemExit, match="relative error"), torch.inference_mode():
        tiles.measure_batch(2, shape, [(16, 32, 4)], torch.device(DEVICE), torch.float32)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("b,q,p", [(1, 128, 729), (4, 256, 729), (2, 64, 64)])
def test_fused_bf16_is_as_close_to_float64_as_the_dense_path_on_gpu(b, q, p):
    t = _inputs(b, q, p, 768, 1152, dtype=torch.float64, seed=q)
    want = local_attention_naive(*t.values(), 12)
    low = {k: None if v is None else v.to(torch.bfloat16) for k, v in t.items()}
    got = local_attention_fused(*low.values(), 12)
    dense = local_attention_naive(*low.values(), 12)
    bound = min(max(2 * rel_err(dense, want), 5e-3), 3e-2)
    assert rel_err(got, want) <= bound, (rel_err(got, want), bound)
