"""Triton step_in (residual add + RMSNorm, in_proj, conv update, x_proj in one kernel) against its reference: the
output rows (conv rows after silu(conv)), the new residual, the conv state rolled in place and Mamba-1's x_proj
of the conv outputs, in the Mamba-1 layout (conv over the first rows) and the Mamba-2 one (conv over middle
rows); interpreter on CPU, compiled on GPU."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from testing_utils import assert_close  # noqa: E402

from qmamba.ops.causal_conv1d.naive import causal_conv1d_update_ref  # noqa: E402
from qmamba.ops.rms_norm.naive import add_norm_ref  # noqa: E402
from qmamba.ops.step_in.fused import step_in  # noqa: E402
from qmamba.ops.step_in.naive import step_in_ref  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _inputs(b, d, n_out, n_conv, w, dtype, residual=True, bias=False, conv_bias=True, n_xp=0):
    kw = {"device": DEVICE}
    return {
        "xproj_weight": (torch.randn(n_xp, n_conv, **kw) * n_conv**-0.5).to(dtype) if n_xp else None,
        "hidden": torch.randn(b, d, dtype=dtype, **kw),
        "residual": torch.randn(b, d, **kw) if residual else None,
        "norm_weight": (1 + 0.1 * torch.randn(d, **kw)).to(dtype), "eps": 1e-5,
        "in_weight": (torch.randn(n_out, d, **kw) * d**-0.5).to(dtype),
        "in_bias": torch.randn(n_out, dtype=dtype, **kw) if bias else None,
        "conv_state": torch.randn(b, n_conv, w, dtype=dtype, **kw),
        "conv_weight": torch.randn(n_conv, w, dtype=dtype, **kw) * 0.5,
        "conv_bias": torch.randn(n_conv, dtype=dtype, **kw) if conv_bias else None,
    }


def _compare(t: dict, tol: float, conv_lo: int, **kw):
    mine, ref = dict(t), dict(t)
    mine["conv_state"], ref["conv_state"] = t["conv_state"].clone(), t["conv_state"].clone()
    got = step_in(**mine, conv_lo=conv_lo, **kw)
    want = step_in_ref(**ref, conv_lo=conv_lo)
    assert len(got) == 3 and (got[2] is None) == (t["xproj_weight"] is None)
    for name, a, b in zip(("out", "residual", "x_proj"), got, want):
        if b is None:
            continue
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert_close(a.float(), b.float(), tol, name)
    assert_close(mine["conv_state"].float(), ref["conv_state"].float(), tol, "conv state")


@pytest.mark.parametrize("d,n_out,n_conv,conv_lo,w", [(40, 48, 24, 0, 4), (33, 34, 17, 0, 3), (40, 61, 30, 13, 4)])
@pytest.mark.parametrize("residual,bias,conv_bias", [(True, False, True), (False, True, False)])
@pytest.mark.parametrize("prenorm,dbuf", [(False, False), (True, False), (False, True)])
def test_matches_ref_fp32(d, n_out, n_conv, conv_lo, w, residual, bias, conv_bias, prenorm, dbuf):
    # small tiles: several k tiles, programs straddling the conv rows' edges; prenorm: add_norm, then the
    # kernel on its output; dbuf: in_proj's tiles loaded a tile ahead
    _compare(_inputs(1, d, n_out, n_conv, w, torch.float32, residual, bias, conv_bias), 1e-5, conv_lo,
             block_n=8, block_k=16, prenorm=prenorm, dbuf=dbuf)


def test_matches_ref_bf16():
    _compare(_inputs(1, 64, 96, 48, 4, torch.bfloat16), 2e-2, 0, block_n=16, block_k=32)


@pytest.mark.parametrize("d,n_out,n_conv,conv_lo,n_xp", [(40, 48, 24, 0, 11), (33, 70, 35, 0, 20), (40, 61, 30, 13, 7)])
def test_x_proj_matches_ref_and_leaves_its_scratch_zeroed(d, n_out, n_conv, conv_lo, n_xp):
    from qmamba.ops.step_in import fused as module

    t = _inputs(1, d, n_out, n_conv, 4, torch.float32, n_xp=n_xp)
    for _ in range(2):  # the second launch starts from the scratch the first one left
        _compare(t, 1e-5, conv_lo, block_n=8, block_k=16, fuse_xproj=True)
        acc, count = module._scratch(t["hidden"].device)
        assert int(count) == 0 and not acc.any()


@pytest.mark.parametrize("b,d,n_out,n_conv,conv_lo,n_xp", [(3, 40, 61, 30, 13, 0), (2, 33, 70, 35, 0, 20),
                                                          (16, 40, 48, 24, 0, 11), (5, 20, 40, 20, 0, 0)])
@pytest.mark.parametrize("residual,bias,conv_bias,prenorm", [(True, False, True, False), (False, True, False, False),
                                                             (True, True, False, True)])
def test_rows_kernel_matches_ref(b, d, n_out, n_conv, conv_lo, n_xp, residual, bias, conv_bias, prenorm):
    from qmamba.ops.step_in import fused as module

    t = _inputs(b, d, n_out, n_conv, 4, torch.float32, residual, bias, conv_bias, n_xp=n_xp)
    for _ in range(2):  # the second launch starts from the scratch the first one left
        _compare(t, 1e-5, conv_lo, block_n=16, block_k=16, prenorm=prenorm, rows_kernel=True)
        acc, count = module._scratch(t["hidden"].device)
        assert int(count) == 0 and not acc.any()


@gpu
@pytest.mark.gpu
def test_rows_kernel_bf16():  # Triton's interpreter has no bf16 dot
    _compare(_inputs(4, 64, 96, 48, 4, torch.bfloat16, n_xp=24), 2e-2, 0, block_n=16, block_k=32, rows_kernel=True)


@pytest.mark.parametrize("b", [1, 3])
def test_defaults_x_proj_after_the_kernel_on_add_norms_output_and_several_rows_composed(b, monkeypatch):
    from qmamba.ops.step_in import fused as module

    if b > 1:  # with x_proj: composed
        monkeypatch.setattr(module, "launch_rows", None)  # would fail if called
    calls = []
    real = module._launch
    monkeypatch.setattr(module, "_launch", lambda *a, **k: calls.append((a[10], k.get("normed"))) or real(*a, **k))
    _compare(_inputs(b, 40, 61, 30, 4, torch.float32, n_xp=9), 1e-5, 13, block_n=8, block_k=16)
    assert calls == ([(None, True)] if b == 1 else [])  # one row: the kernel ran on add_norm's output, no x_proj


def test_several_rows_without_x_proj_take_the_rows_kernel_on_add_norms_output(monkeypatch):
    from qmamba.ops.step_in import fused as module

    calls = []
    real = module.launch_rows
    monkeypatch.setattr(module, "launch_rows", lambda *a, **k: calls.append(k["normed"]) or real(*a, **k))
    _compare(_inputs(3, 40, 61, 30, 4, torch.float32), 1e-5, 13, block_n=16, block_k=16)
    assert calls == [True]


def test_several_rows_with_x_proj_after_take_the_rows_kernel_then_x_proj(monkeypatch):
    from qmamba.ops.step_in import fused as module

    calls = []
    real = module.launch_rows
    monkeypatch.setattr(module, "launch_rows", lambda *a, **k: calls.append(a[10]) or real(*a, **k))
    _compare(_inputs(3, 40, 61, 30, 4, torch.float32, n_xp=9), 1e-5, 13, block_n=16, block_k=16, fuse_xproj=False)
    assert calls == [None]  # the rows kernel ran without x_proj; x_proj (checked by _compare) came after it


def test_measured_config_keeps_the_fastest_one_row_variant_once_and_leaves_the_state(monkeypatch):
    """The variant timed fastest is kept (here the second: fake timings), each variant is checked and timed
    on probe rows and a scratch conv state, the real state and rows do not move, and the choice is measured
    once per in_proj."""
    from qmamba.ops.step_in import fused as module

    timings, calls = iter([5.0, 3.0, 4.0, 6.0]), []

    def fake_graph_us(fn, copies, x):
        calls.append(fn(x, copies[0]))  # each variant runs (in the kernel) before it is timed
        return next(timings)

    monkeypatch.setattr(module, "MEASURED_ON", ("cpu", "cuda"))
    monkeypatch.setattr(module, "_CHOSEN", {})
    monkeypatch.setattr(module, "graph_us", fake_graph_us)
    monkeypatch.setattr(module, "weight_copies", lambda w: [w])
    monkeypatch.setattr(module, "ONE_ROW", {**module.ONE_ROW, "block_k": 16})  # several k tiles at d = 40
    t = _inputs(1, 40, 61, 30, 4, torch.float32)
    before = {k: v.clone() for k, v in t.items() if isinstance(v, torch.Tensor)}
    args = [t[k] for k in ("hidden", "residual", "norm_weight", "eps", "in_weight", "in_bias", "conv_state",
                           "conv_weight", "conv_bias")]
    cfg = module.measured_config(*args, 13, True, None)
    assert cfg == {**module.ONE_ROW, **module.ONE_ROW_TILES[1]} and len(calls) == len(module.ONE_ROW_TILES)
    assert all(torch.equal(t[k], v) for k, v in before.items()), "measuring moved a real input"
    assert module.measured_config(*args, 13, True, None) is cfg and len(calls) == len(module.ONE_ROW_TILES)
    _compare(t, 1e-5, 13)  # step_in with no config runs the chosen variant, against the reference


@pytest.mark.parametrize("n_xp", [0, 9])
def test_measured_config_for_several_rows_keeps_the_fastest_way_per_number_of_rows(monkeypatch, n_xp):
    """2..16 rows: the unfused ops, the rows kernel with 64 or 32 features (Mamba-1: x_proj after it) are each
    checked and timed (fake timings: the second wins at 3 rows, the first at 5), measured once per number of
    rows; step_in with no config then runs the choice, against the reference."""
    from qmamba.ops.step_in import fused as module

    timings, calls = iter([5.0, 3.0, 4.0, 1.0, 3.0, 2.0]), []
    launched = []
    real_rows = module.launch_rows

    def fake_graph_us(fn, copies, x):
        calls.append(fn(x, copies[0]))
        return next(timings)

    monkeypatch.setattr(module, "MEASURED_ON", ("cpu", "cuda"))
    monkeypatch.setattr(module, "_CHOSEN", {})
    monkeypatch.setattr(module, "graph_us", fake_graph_us)
    monkeypatch.setattr(module, "weight_copies", lambda w: [w])
    monkeypatch.setattr(module, "launch_rows", lambda *a, **k: launched.append(k["block_n"]) or real_rows(*a, **k))
    monkeypatch.setattr(module, "SEVERAL_ROWS", {**module.SEVERAL_ROWS, "block_k": 16})
    variants = [{**module.SEVERAL_ROWS, **v} for v in module.rows_variants(n_xp > 0)]
    assert [v["rows_kernel"] for v in variants] == [False, True, True] and variants[2]["block_n"] == 32
    for rows, want in ((3, variants[1]), (5, variants[0])):
        t = _inputs(rows, 40, 61, 30, 4, torch.float32, n_xp=n_xp)
        before = {k: v.clone() for k, v in t.items() if isinstance(v, torch.Tensor)}
        args = [t[k] for k in ("hidden", "residual", "norm_weight", "eps", "in_weight", "in_bias", "conv_state",
                               "conv_weight", "conv_bias")]
        cfg = module.measured_config(*args, 13, True, t["xproj_weight"])
        assert cfg == want
        assert all(torch.equal(t[k], v) for k, v in before.items()), "measuring moved a real input"
        assert module.measured_config(*args, 13, True, t["xproj_weight"]) is cfg
        launched.clear()
        _compare(t, 1e-5, 13)  # no config: the choice runs, against the reference
        assert launched == ([64] if cfg["rows_kernel"] else [])
    assert len(calls) == 6, "measured once per number of rows"


def test_measured_config_skips_a_variant_that_cannot_be_timed(monkeypatch, caplog):
    from qmamba.ops.step_in import fused as module

    timings = iter([RuntimeError("capture failed"), 7.0, 2.0, 9.0])

    def fake_graph_us(fn, copies, x):
        t = next(timings)
        if isinstance(t, Exception):
            raise t
        return t

    monkeypatch.setattr(module, "MEASURED_ON", ("cpu", "cuda"))
    monkeypatch.setattr(module, "_CHOSEN", {})
    monkeypatch.setattr(module, "graph_us", fake_graph_us)
    monkeypatch.setattr(module, "weight_copies", lambda w: [w])
    t = _inputs(1, 40, 61, 30, 4, torch.float32)
    args = [t[k] for k in ("hidden", "residual", "norm_weight", "eps", "in_weight", "in_bias", "conv_state",
                           "conv_weight", "conv_bias")]
    with caplog.at_level("WARNING", logger="qmamba"):
        cfg = module.measured_config(*args, 13, True, None)
    assert cfg == {**module.ONE_ROW, **module.ONE_ROW_TILES[2]}
    assert "could not time step_in's one-row tiles" in caplog.text


@pytest.mark.parametrize("b", [1, 3])
def test_x_proj_over_more_programs_than_its_sum_can_count_is_composed(monkeypatch, b):
    from qmamba.ops.runtime import atomic_sum
    from qmamba.ops.step_in import fused as module

    monkeypatch.setattr(atomic_sum, "MAX_PARTS", 4)  # 61 rows / 8 a program: 8 programs
    monkeypatch.setattr(module, "launch_rows", None)  # would fail if called
    monkeypatch.setattr(module, "_launch", None)
    _compare(_inputs(b, 40, 61, 30, 4, torch.float32, n_xp=9), 1e-5, 13, block_n=8, block_k=16, fuse_xproj=True,
             rows_kernel=True)


def test_more_than_16_rows_are_composed(monkeypatch):
    from qmamba.ops.step_in import fused as module

    monkeypatch.setattr(module, "launch_rows", None)  # would fail if called
    monkeypatch.setattr(module, "_launch", None)
    _compare(_inputs(17, 40, 61, 30, 4, torch.float32, n_xp=9), 1e-5, 13)


def test_ref_is_add_norm_linear_then_conv_of_the_conv_rows():
    t = _inputs(2, 16, 20, 8, 4, torch.float64, n_xp=6)
    state = t["conv_state"].clone()
    out, res, xdbl = step_in_ref(**t, conv_lo=5)
    h, want_res = add_norm_ref(t["hidden"], t["norm_weight"], None, t["residual"], eps=1e-5, residual_in_fp32=True)
    y = h @ t["in_weight"].T
    xc = causal_conv1d_update_ref(y[:, 5:13].contiguous(), state, t["conv_weight"], t["conv_bias"], activation="silu")
    assert torch.equal(out[:, :5], y[:, :5]) and torch.equal(out[:, 13:], y[:, 13:])
    assert_close(out[:, 5:13], xc, 1e-12)
    assert_close(xdbl, xc @ t["xproj_weight"].T, 1e-12, "x_proj of the conv outputs")
    assert_close(res, want_res, 1e-12)
    assert_close(t["conv_state"], state, 1e-12, "conv state rolled")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("d,n_out,n_conv,conv_lo,n_xp", [(2560, 10240, 5120, 0, 192), (2560, 10576, 5376, 5120, 0)])
@pytest.mark.parametrize("b,cfg", [(1, {}), (16, {}), (1, {"prefetch": 2}), (1, {"prenorm": True, "prefetch": 8}),
                                   (1, {"prenorm": False, "dbuf": True}), (1, {"prenorm": True, "dbuf": True})])
def test_gpu_full_size_bf16(b, cfg, d, n_out, n_conv, conv_lo, n_xp):
    # cfg: the defaults, and in_proj's tiles prefetched into L2 (before the PDL wait), on add_norm's output
    t = _inputs(b, d, n_out, n_conv, 4, torch.bfloat16, n_xp=n_xp)
    for _ in range(3):
        _compare(t, 2e-2, conv_lo, **cfg)
    if b == 1 and not cfg:  # the first call measured the one-row variants for this in_proj and kept one
        from qmamba.ops.step_in import fused as module

        chosen = module._CHOSEN[((n_out, d), conv_lo, n_conv, torch.bfloat16, t["hidden"].device, 1, n_xp > 0)]
        assert chosen in [{**module.ONE_ROW, **tiles} for tiles in module.ONE_ROW_TILES]
    if b == 16 and not cfg:  # and at 16 rows one of the ways several rows can run
        from qmamba.ops.step_in import fused as module

        chosen = module._CHOSEN[((n_out, d), conv_lo, n_conv, torch.bfloat16, t["hidden"].device, 16, n_xp > 0)]
        assert chosen in [{**module.SEVERAL_ROWS, **v} for v in module.rows_variants(n_xp > 0)]


def test_a_kernel_triton_cannot_compile_falls_back_to_the_unfused_ops(monkeypatch, caplog):
    import ast

    from triton.compiler.errors import CompilationError

    from qmamba.ops.step_in import fused as module

    calls = []

    def refuse(*args, **kwargs):
        calls.append(1)
        raise CompilationError("x = 1", ast.parse("x = 1").body[0], "unsupported op")

    monkeypatch.setattr(module, "_launch", refuse)
    monkeypatch.setattr(module, "_UNCOMPILABLE", set())
    t = _inputs(1, 40, 48, 24, 4, torch.float32)
    with caplog.at_level("WARNING", logger="qmamba"):
        _compare(t, 1e-5, 0)  # the composed ops' results, conv state rolled once
        _compare(t, 1e-5, 0)
    assert len(calls) == 1, "the kernel is not tried again after it failed to compile"
    assert "could not compile" in caplog.text


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("b,cfg", [(1, {"fuse_xproj": True}), (16, {"fuse_xproj": True, "rows_kernel": True})])
def test_gpu_x_proj_summed_across_programs_is_the_same_on_every_run(b, cfg):
    # hundreds of programs add into the same x_proj sums in whatever order they finish: the fixed-point sums
    # (ops/runtime/atomic_sum.py) give the same bits every time, as float atomics would not
    t = _inputs(b, 2560, 10240, 5120, 4, torch.bfloat16, n_xp=192)
    runs = []
    for _ in range(20):
        state = t["conv_state"].clone()
        runs.append(step_in(**{**t, "conv_state": state}, conv_lo=0, **cfg)[2])
    assert all(torch.equal(r, runs[0]) for r in runs), "x_proj differs between runs of the same input"
    want = step_in_ref(**{**t, "conv_state": t["conv_state"].clone()}, conv_lo=0)[2]
    assert_close(runs[0].float(), want.float(), 2e-2, "x_proj")
