"""Triton gemv against F.linear (interpreter on CPU, compiled on GPU): one row, padded rows, bias, odd sizes."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from testing_utils import assert_close  # noqa: E402

from qmamba.ops.gemv import tiled as triton_gemv  # noqa: E402
from qmamba.ops.gemv.naive import gemv_ref  # noqa: E402
from qmamba.ops.gemv.tiled import gemv  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("m,n,k", [(1, 37, 50), (1, 8, 16), (3, 40, 33), (16, 19, 64), ((2, 1), 24, 70)])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dbuf", [False, True])
def test_matches_linear_fp32(m, n, k, bias, dbuf):
    lead = m if isinstance(m, tuple) else (m,)
    x = torch.randn(*lead, k, device=DEVICE)
    w = torch.randn(n, k, device=DEVICE)
    b = torch.randn(n, device=DEVICE) if bias else None
    # several k tiles, a partial last one; dbuf: each tile's load issued a tile ahead (one row)
    cfg = {"block_n": 16, "block_k": 32, "num_warps": 4, "num_stages": 2, "dbuf": dbuf}
    y = gemv(x, w, b, config=cfg)
    assert y.shape == (*lead, n)
    assert_close(y, gemv_ref(x, w, b), 1e-5)


@pytest.mark.parametrize("m,split,block_k", [(1, 3, 32), (1, 4, 32), (5, 2, 32), (1, 3, 64)])
def test_split_k_adds_partial_sums(m, split, block_k):
    # k = 200 in slices of whole k tiles (the last one partial), bias added once; with block_k 64 three slices
    # round up to 128 columns each: two slices in the grid, not three
    x, w, b = torch.randn(m, 200, device=DEVICE), torch.randn(21, 200, device=DEVICE), torch.randn(21, device=DEVICE)
    cfg = {"block_n": 8, "block_k": block_k, "num_warps": 4, "num_stages": 2, "split_k": split}
    for _ in range(2):  # the second launch starts from the scratch the first left
        assert_close(gemv(x, w, b, config=cfg), gemv_ref(x, w, b), 1e-5)
        _, cnt = triton_gemv._SCRATCH[x.device]
        assert not cnt.any(), "split-k leaves its tile counters zeroed"


def test_split_k_adds_the_slices_in_slice_order():
    # parts whose float sum depends on the order: ((1 + 2^-30) - 1) + 2^-20 is 2^-20 in fp32, as slices 0..3
    # are added; other orders give 2^-30 + 2^-20 or 0
    x = torch.tensor([[1.0, 2.0**-30, -1.0, 2.0**-20]], device=DEVICE)
    w = torch.ones(3, 4, device=DEVICE)
    cfg = {"block_n": 8, "block_k": 1, "num_warps": 1, "num_stages": 1, "split_k": 4}
    assert torch.equal(gemv(x, w, config=cfg), torch.full((1, 3), 2.0**-20, device=DEVICE))


@pytest.mark.parametrize("cfg", triton_gemv.rows_candidates(1024))
def test_rows_candidates_match_linear(cfg):
    x, w, b = torch.randn(5, 1024, device=DEVICE), torch.randn(40, 1024, device=DEVICE), torch.randn(40, device=DEVICE)
    assert_close(gemv(x, w, b, config=cfg), gemv_ref(x, w, b), 1e-5)


def test_rows_candidates_split_k_only_over_long_rows():
    split = lambda k, swap: [c.get("split_k", 1) for c in triton_gemv.rows_candidates(k)  # noqa: E731
                             if c.get("swap", False) == swap]
    assert split(5120, False) == [1, 1, 2, 4, 8, 16] and split(5120, True) == [1, 2, 4, 8]
    assert split(1024, False) == [1, 1, 2, 4]
    assert split(256, False) == [1, 1] and split(256, True) == [1]


@pytest.mark.parametrize("m,split", [(16, 1), (3, 3), (1, 1)])
def test_swapped_tiles_match_linear(m, split):
    """The weight on the dot's M side: partial feature and k tiles, k split (sums across programs), bias once;
    one row ignores the option."""
    x, w, b = torch.randn(m, 200, device=DEVICE), torch.randn(70, 200, device=DEVICE), torch.randn(70, device=DEVICE)
    cfg = {"block_n": 64, "block_k": 32, "num_warps": 4, "num_stages": 2, "swap": True, "split_k": split}
    assert_close(gemv(x, w, b, config=cfg), gemv_ref(x, w, b), 1e-5)


def test_strided_rows_and_default_config():
    x = torch.randn(2, 90, device=DEVICE)[:, 5:69]  # rows with a stride, contiguous along k
    w = torch.randn(30, 64, device=DEVICE)
    assert_close(gemv(x, w), gemv_ref(x, w), 1e-5)


def test_falls_back_beyond_16_rows_and_for_mixed_dtypes():
    x, w = torch.randn(17, 8, device=DEVICE), torch.randn(5, 8, device=DEVICE)
    assert_close(gemv(x, w), gemv_ref(x, w), 1e-6)
    wt = torch.randn(8, 5, device=DEVICE).t()  # not contiguous along k
    assert_close(gemv(x[:1], wt), gemv_ref(x[:1], wt), 1e-6)


_PREFETCH = {"block_n": 16, "block_k": 512, "num_warps": 4, "num_stages": 1, "prefetch": 2}
_SMALL_DBUF = {"block_n": 4, "block_k": 256, "num_warps": 4, "num_stages": 1, "prefetch": 8, "dbuf": True}


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("m,cfg", [(1, None), (4, None), (16, None), (1, _PREFETCH), (16, _PREFETCH), (1, _SMALL_DBUF)])
@pytest.mark.parametrize("n,k", [(10240, 2560), (2560, 5120), (50280, 2560), (192, 5120)])
def test_gpu_decode_shapes_bf16(m, cfg, n, k):
    # cfg None: as gemv chooses; else tiles prefetched into L2 ahead of their loads (and before the PDL wait)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * k**-0.5
    assert_close(gemv(x, w, config=cfg).float(), gemv_ref(x.float(), w.float()), 2e-2)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 16])
def test_gpu_split_k_is_the_same_on_every_run(m):
    # 16 slices of k add into each tile's sums in whatever order they finish; fp32 output shows every bit
    x = torch.randn(m, 5120, device="cuda")
    w = torch.randn(192, 5120, device="cuda") * 5120**-0.5
    cfg = {"block_n": 16, "block_k": 64, "num_warps": 4, "num_stages": 3, "split_k": 16}
    runs = [gemv(x, w, config=cfg) for _ in range(50)]
    assert all(torch.equal(r, runs[0]) for r in runs), "split-k sums differ between runs of the same input"
    assert_close(runs[0], gemv_ref(x, w), 1e-4)


def test_split_k_scratch_grows_without_freeing_what_graphs_may_hold(monkeypatch):
    monkeypatch.setattr(triton_gemv, "_SCRATCH", {})
    monkeypatch.setattr(triton_gemv, "_OUTGROWN", [])
    cfg = {"block_n": 8, "block_k": 32, "num_warps": 4, "num_stages": 2, "split_k": 2}
    x = torch.randn(1, 64, device=DEVICE)
    small, large = torch.randn(10, 64, device=DEVICE), torch.randn(50, 64, device=DEVICE)
    gemv(x, small, config=cfg)
    first = triton_gemv._SCRATCH[x.device]
    assert_close(gemv(x, large, config=cfg), gemv_ref(x, large), 1e-5)
    grown = triton_gemv._SCRATCH[x.device]
    assert grown[0].numel() >= 50 and grown[0] is not first[0]
    assert any(t is first[0] for t in triton_gemv._OUTGROWN) and any(t is first[1] for t in triton_gemv._OUTGROWN)


@gpu
@pytest.mark.gpu
def test_gpu_choose_measures_once_and_keeps_a_candidate_or_cublas(monkeypatch):
    monkeypatch.setattr(triton_gemv, "_CHOSEN", {})
    x = torch.randn(1, 5120, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(2560, 5120, device="cuda", dtype=torch.bfloat16) * 5120**-0.5
    chosen = triton_gemv.choose(x, w, None)
    assert chosen is None or chosen in triton_gemv.candidates(2560, 5120)
    assert {((2560, 5120), torch.bfloat16, w.device, False): chosen} == triton_gemv._CHOSEN
    assert_close(gemv(x, w).float(), gemv_ref(x.float(), w.float()), 2e-2)
    rows = torch.randn(16, 5120, device="cuda", dtype=torch.bfloat16)  # several rows: measured apart
    chosen = triton_gemv.choose(rows, w, None)
    assert chosen is None or chosen in triton_gemv.rows_candidates(5120)
    assert ((2560, 5120), torch.bfloat16, w.device, False, "rows") in triton_gemv._CHOSEN
    assert_close(gemv(rows, w).float(), gemv_ref(rows.float(), w.float()), 2e-2)
