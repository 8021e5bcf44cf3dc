"""qmamba's kernels at the configurations they run with on the full-size shapes, compiled for sm_90 (``sm90.py``):
no register spills. A spilled thread keeps in local memory what should stay in registers (batch 16's dt_proj
steps in mamba1_decode_ssm spilled 480 bytes a thread until its tiles were bounded).

The decode step's kernels are compiled from their configurations; the training and prefill kernels from the
launches a one-layer model of the full width records in Triton's interpreter (``sm90.recording``), specialised
as the JIT would specialise them."""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import pytest
import torch

triton = pytest.importorskip("triton")

from sm90 import KERNELS, recording, resources_of, triton_on_cpu  # noqa: E402

from qmamba.models.mamba_lm import MambaLM, MambaLMConfig  # noqa: E402
from qmamba.ops.gemv import tiled as gemv_triton  # noqa: E402
from qmamba.ops.selective_scan import fused_recurrent as seq  # noqa: E402
from qmamba.ops.state_update.mamba1_step import ROWS_FROM, decode_config, rows_config  # noqa: E402
from qmamba.ops.step_in import fused as step_in_triton  # noqa: E402
from qmamba.ops.step_out import fused as step_out_triton  # noqa: E402

DECODE_WEIGHTS = [(10240, 2560), (2560, 5120), (192, 5120), (50280, 2560)]  # in_proj, out_proj, x_proj, lm_head


def _no_spills(res: dict) -> None:
    assert res["STACK"] == 0 and res["LOCAL"] == 0, f"spills: {res}"


def _job(name: str, constexprs: dict, num_warps: int, num_stages: int = 3):
    """A compile job for ``resources_of``: kernel ``KERNELS[name]`` at these constexprs (what ``resources`` takes)."""
    kernel, types = KERNELS[name]
    spec = {"types": types, "constexprs": constexprs, "num_warps": num_warps, "num_stages": num_stages}
    return SimpleNamespace(kernel=kernel, spec=json.dumps(spec, sort_keys=True))


def _mamba1_decode_job(batch: int):
    rows = batch >= ROWS_FROM
    cfg = (rows_config if rows else decode_config)(batch, 5120, 16, 160)
    warps = cfg.pop("num_warps")
    flags = {"HAS_D": True, "HAS_Z": True, "PDL": True, **({"DOT_F32": False} if rows else {})}
    return _job("mamba1_decode_rows" if rows else "mamba1_decode", {**flags, **cfg}, warps)


def _gemv_configs() -> list[tuple[int, dict]]:
    """(rows, config) of every configuration gemv may run on a decode weight, each once."""
    seen, out = set(), []
    for (n, k), m in ((w, m) for w in DECODE_WEIGHTS for m in (1, 16)):
        for cfg in [gemv_triton.default_config(m, n, k), *gemv_triton.candidates(n, k, m)]:
            key = (m, tuple(sorted(cfg.items())))
            if key not in seen:
                seen.add(key)
                out.append((m, cfg))
    return out


def _gemv_job(m: int, cfg: dict):
    constexprs = {"HAS_BIAS": False, "BLOCK_M": 1 if m == 1 else gemv_triton.MAX_ROWS, "BLOCK_N": cfg["block_n"],
                  "BLOCK_K": cfg["block_k"], "SPLIT_K": cfg.get("split_k", 1), "IEEE": False,
                  "PREFETCH": cfg.get("prefetch", 0), "LINES": 8, "DBUF": cfg.get("dbuf", False),
                  "SWAP": cfg.get("swap", False) and m > 1, "PDL": True}
    return _job("gemv", constexprs, cfg["num_warps"], cfg["num_stages"])


def _step_in_one_row_job(tiles: dict):
    cfg = {**step_in_triton.ONE_ROW, **tiles}
    constexprs = {"HAS_RES": False, "HAS_BIAS": False, "HAS_CONV_BIAS": True, "HAS_XPROJ": cfg["fuse_xproj"],
                  "XP_PAD": 256, "W": 4, "W_PAD": 4, "BLOCK_N": cfg["block_n"], "BLOCK_K": cfg["block_k"],
                  "NORMED": cfg["prenorm"], "DBUF": cfg["dbuf"], "PREFETCH": cfg["prefetch"], "LINES": 8, "PDL": True}
    return _job("step_in", constexprs, cfg["num_warps"], cfg["num_stages"])


def _step_in_rows_job(variant: dict):
    cfg = {**step_in_triton.SEVERAL_ROWS, **variant}
    constexprs = {"HAS_RES": False, "HAS_BIAS": False, "HAS_CONV_BIAS": True, "HAS_XPROJ": False, "XP_PAD": 16,
                  "W": 4, "W_PAD": 4, "BLOCK_M": 16, "BLOCK_N": cfg["block_n"], "BLOCK_K": cfg["block_k"],
                  "IEEE": False, "NORMED": cfg["prenorm"], "PDL": True}
    return _job("step_in_rows", constexprs, cfg["num_warps"], cfg["num_stages"])


def _step_out_job(tiles: dict):
    constexprs = {"HAS_BIAS": False, "BLOCK_N": tiles["block_n"], "BLOCK_K": tiles["block_k"],
                  "DBUF": tiles.get("dbuf", False), "PDL": True}
    return _job("step_out", constexprs, 4, 1)


def _sequential_scan_job():
    flags = {"HAS_BIAS": True, "SOFTPLUS": True, "HAS_D": True, "HAS_Z": True, "HAS_H0": False, "NS": 16}
    return _job("sequential_scan", {**flags, "BLOCK_D": seq.BLOCK_D, "AHEAD": seq.AHEAD}, seq.WARPS)


BATCHES = [1, 2, 16, 64]
ROWS_VARIANTS = [v for v in step_in_triton.rows_variants(False) if v["rows_kernel"]]


@functools.cache
def _decode_resources() -> dict[str, dict[str, int]]:
    """``resources`` of every decode-step configuration below, compiled in one subprocess (one Triton import
    for all of them, not one per test); keyed by the job's spec."""
    jobs = [*map(_mamba1_decode_job, BATCHES), *(_gemv_job(m, cfg) for m, cfg in _gemv_configs()),
            *map(_step_in_one_row_job, step_in_triton.ONE_ROW_TILES), *map(_step_in_rows_job, ROWS_VARIANTS),
            *map(_step_out_job, step_out_triton.TILES), _sequential_scan_job()]
    unique = list({(job.kernel, job.spec): job for job in jobs}.values())
    return {(job.kernel, job.spec): res for job, res in zip(unique, resources_of(unique))}


def _resources(job) -> dict[str, int]:
    return _decode_resources()[(job.kernel, job.spec)]


@pytest.mark.parametrize("batch", BATCHES)
def test_mamba1_decode_ssm(batch):
    _no_spills(_resources(_mamba1_decode_job(batch)))


@pytest.mark.parametrize("m,cfg", _gemv_configs(), ids=lambda v: str(v) if isinstance(v, int) else
                         "-".join(f"{k}{v}" for k, v in v.items()))
def test_gemv(m, cfg):
    _no_spills(_resources(_gemv_job(m, cfg)))


@pytest.mark.parametrize("tiles", step_in_triton.ONE_ROW_TILES, ids=str)
def test_step_in_one_row(tiles):
    _no_spills(_resources(_step_in_one_row_job(tiles)))


@pytest.mark.parametrize("variant", ROWS_VARIANTS, ids=str)
def test_step_in_rows(variant):
    _no_spills(_resources(_step_in_rows_job(variant)))


@pytest.mark.parametrize("tiles", step_out_triton.TILES, ids=str)
def test_step_out(tiles):
    _no_spills(_resources(_step_out_job(tiles)))


def test_sequential_scan():
    _no_spills(_resources(_sequential_scan_job()))


# Kernels that spill at the configuration they run with, and the stack a thread may use there (bytes): the
# Mamba-2 SSD output and backward kernels at headdim 64 / d_state 128 (smaller tiles that do not spill ran
# slower on an H100: ``ssd.chunk.TILES``' comment), the gated norm's backward over 5120
# channels at 16 warps. Any other kernel must not spill, these no more than this.
KNOWN_SPILLS = {"qmamba.ops.ssd.chunk_fwd:output_kernel": 352, "qmamba.ops.ssd.chunk_bwd:chunk_bwd_kernel": 384,
                "qmamba.ops.rms_norm.rowwise:_gated_bwd_kernel": 48}

MODEL_CASES = {  # layer, batch, length, backward
    "mamba1-train-800": ("Mamba1", 1, 800, True),  # chunked scan forward and backward
    "mamba2-train-800": ("Mamba2", 1, 800, True),  # SSD forward and backward, gated norm
    "mamba1-prefill-16x168": ("Mamba1", 16, 168, False),  # the sequential scan of batched prefills
}


def _record(layer: str, batch: int, length: int, backward: bool):
    torch.manual_seed(0)
    lm = MambaLM(MambaLMConfig(d_model=2560, n_layer=1, vocab_size=256, ssm_cfg={"layer": layer}),
                 dtype=torch.bfloat16)
    ids = torch.randint(0, 256, (batch, length))
    with triton_on_cpu(), recording() as launches, torch.set_grad_enabled(backward):
        logits = lm(ids).logits
        if backward:
            logits.float().sum().backward()
    return launches


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_model_kernels(case):
    launches = _record(*MODEL_CASES[case])
    kernels = {launch.kernel for launch in launches}
    assert {"qmamba.ops.rms_norm.rowwise:_add_norm_fwd_kernel", "qmamba.ops.causal_conv1d.direct:_conv_fwd_kernel"} \
        <= kernels, kernels  # the recording saw the layer's kernels
    spills = []
    for launch, res in zip(launches, resources_of(launches)):
        allowed = KNOWN_SPILLS.get(launch.kernel, 0)
        if res["STACK"] > allowed or res["LOCAL"] > allowed:
            spills.append((launch.kernel, json.loads(launch.spec)["constexprs"], res))
    assert not spills, spills
