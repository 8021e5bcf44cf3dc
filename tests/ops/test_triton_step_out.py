"""Triton step_out (Mamba-2's gated RMSNorm folded into out_proj, one row) against its reference: fp32 and bf16,
odd sizes, bias, double-buffered tiles; the cases it leaves to the unfused ops; the measured choice between
the kernel and the unfused ops. Interpreter on CPU, compiled on GPU."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from testing_utils import assert_close  # noqa: E402

from qmamba.ops.step_out import fused as module  # noqa: E402
from qmamba.ops.step_out.fused import TILES, step_out  # noqa: E402
from qmamba.ops.step_out.naive import step_out_ref  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _inputs(b, k, n, dtype, bias=False):
    kw = {"device": DEVICE}
    zxy = torch.randn(b, 3 * k, dtype=dtype, **kw)  # z a strided view, as the model's split of in_proj's output
    return {"y": torch.randn(b, k, dtype=dtype, **kw), "z": zxy[:, k:2 * k], "eps": 1e-5,
            "norm_weight": (1 + 0.1 * torch.randn(k, **kw)).to(dtype),
            "out_weight": (torch.randn(n, k, **kw) * k**-0.5).to(dtype),
            "out_bias": torch.randn(n, dtype=dtype, **kw) if bias else None}


@pytest.mark.parametrize("k,n", [(40, 21), (64, 8), (300, 37)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("tiles", [{"block_n": 8, "block_k": 16}, {"block_n": 4, "block_k": 32, "dbuf": True}])
def test_matches_ref_fp32(k, n, bias, tiles):
    # several k tiles, a partial last one, partial feature tiles
    t = _inputs(1, k, n, torch.float32, bias)
    got = step_out(**t, config=tiles)
    assert got.shape == (1, n) and got.dtype == torch.float32
    assert_close(got, step_out_ref(**t), 1e-5)


def test_matches_ref_bf16():
    # the normed row stays fp32 here where the reference rounds it to bf16: within bf16's rounding
    t = _inputs(1, 256, 96, torch.bfloat16, bias=True)
    got = step_out(**t, config={"block_n": 16, "block_k": 64})
    assert got.dtype == torch.bfloat16
    assert_close(got.float(), step_out_ref(**t).float(), 2e-2)


@pytest.mark.parametrize("case", ["rows", "groups", "norm_before_gate", "no_gate"])
def test_what_the_kernel_does_not_take_runs_the_unfused_ops(monkeypatch, case):
    t = _inputs(2 if case == "rows" else 1, 64, 24, torch.float32)
    kw = {"group_size": 16} if case == "groups" else {"norm_before_gate": True} if case == "norm_before_gate" else {}
    if case == "no_gate":
        t["z"] = None
    monkeypatch.setattr(module, "_launch", None)  # would fail if called
    assert_close(step_out(**t, **kw, config={"block_n": 8, "block_k": 16}), step_out_ref(**t, **kw), 1e-5)


def test_choose_keeps_the_fastest_of_the_kernel_tiles_and_the_unfused_ops_once(monkeypatch):
    # fake timings: the unfused ops first (4.0), then TILES in order; the third tile wins, measured once
    timings, timed = iter([4.0, 5.0, 6.0, 2.0, 3.0]), []

    def fake_graph_us(fn, copies, x):
        timed.append(fn(x, copies[0]))  # what is timed runs
        return next(timings)

    monkeypatch.setattr(module, "MEASURED_ON", ("cpu", "cuda"))
    monkeypatch.setattr(module, "_CHOSEN", {})
    monkeypatch.setattr(module, "graph_us", fake_graph_us)
    monkeypatch.setattr(module, "weight_copies", lambda w: [w])
    monkeypatch.setattr(module, "TILES", tuple({**t, "block_k": 16} for t in TILES))  # several k tiles at k = 40
    t = _inputs(1, 40, 21, torch.float32)
    assert module.choose(t["y"], t["z"], t["norm_weight"], t["eps"], t["out_weight"], None) == module.TILES[2]
    assert len(timed) == 1 + len(TILES)
    assert_close(step_out(**t), step_out_ref(**t), 1e-5)  # no config: the kept tiles run
    assert len(timed) == 1 + len(TILES), "measured once per out_proj"


def test_choose_keeps_the_unfused_ops_when_no_tile_beats_them(monkeypatch, caplog):
    timings = iter([1.0, 5.0, 6.0, 2.0, 3.0])
    monkeypatch.setattr(module, "MEASURED_ON", ("cpu", "cuda"))
    monkeypatch.setattr(module, "_CHOSEN", {})
    monkeypatch.setattr(module, "graph_us", lambda fn, copies, x: next(timings))
    monkeypatch.setattr(module, "weight_copies", lambda w: [w])
    t = _inputs(1, 40, 21, torch.float32)
    with caplog.at_level("INFO", logger="qmamba"):
        assert module.choose(t["y"], t["z"], t["norm_weight"], t["eps"], t["out_weight"], None) is None
    assert "measured step_out's tiles once: kept the unfused ops (1.0 us; 4 timed against 1.0 us)" in caplog.text
    monkeypatch.setattr(module, "_launch", None)  # the unfused ops run from now on
    assert_close(step_out(**t), step_out_ref(**t), 1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_mamba2_decode_step_through_the_kernel_matches_the_reference(monkeypatch, batch):
    """A Mamba-2 LM's decode step with step_out's kernel (interpreter) in place of the unfused gated norm and
    out_proj gives the reference's logits: the mixer passes y, z, the norm's weight, eps and group and
    out_proj as the kernel expects them (z a strided view of in_proj's output); several rows run the unfused
    ops."""
    from qmamba.models import mamba2
    from qmamba.models.mamba_lm import MambaLM, MambaLMConfig
    from qmamba.ops import use_backend

    torch.manual_seed(0)
    cfg = MambaLMConfig(d_model=64, n_layer=2, vocab_size=50,
                        ssm_cfg={"layer": "Mamba2", "d_state": 16, "headdim": 16, "chunk_size": 8})
    lm = MambaLM(cfg)
    ids = torch.randint(0, 50, (batch, 5))
    with use_backend("ref"), torch.no_grad():
        logits, cache = lm.prefill(ids)
        want = lm.step(logits.argmax(-1), cache)
        logits, cache = lm.prefill(ids)
        calls = []
        real = module._launch
        monkeypatch.setattr(module, "_launch", lambda *a: calls.append(a[0].shape) or real(*a))
        monkeypatch.setattr(mamba2, "step_out", lambda *a: step_out(*a, config={"block_n": 8, "block_k": 32}))
        got = lm.step(logits.argmax(-1), cache)
    assert calls == ([(1, 128)] * 2 if batch == 1 else []), "each layer's one-row step ran the kernel"
    assert_close(got, want, 1e-5)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("tiles", [None, *TILES], ids=str)
def test_gpu_full_size_bf16(tiles):
    # Mamba2-2.7B's out_proj (2560 x 5120); None: as chosen (measured on first use: a tile or the unfused ops)
    t = _inputs(1, 5120, 2560, torch.bfloat16)
    for _ in range(2):
        assert_close(step_out(**t, config=tiles).float(), step_out_ref(**t).float(), 2e-2)
    if tiles is None:
        key = ((2560, 5120), torch.bfloat16, t["y"].device, False)
        assert key in module._CHOSEN and module._CHOSEN[key] in [None, *TILES]
