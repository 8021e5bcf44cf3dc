"""``qmamba bench``: the markdown tables, the options, and the whole command end to end on CPU (tiny shapes,
--quick, reference ops, no peers) writing valid JSON and a table."""

from __future__ import annotations

import argparse
import json

import pytest
from testing_utils import benchmark_script, measure_briefly

from qmamba.bench.options import BenchOptions
from qmamba.bench.report import fmt, lm_table, markdown_table, render, vqa_batch_table, vqa_table
from qmamba.commands import bench as bench_command
from qmamba.errors import ConfigError

OPTIONS = {"batch_decode": 16, "prompt_len": 800, "train_batch": 1, "train_len": 800, "answer_tokens": 5,
           "vqa_batch": 64}


def test_fmt_keeps_about_three_digits():
    assert [fmt(v) for v in (None, 170.4, 39.64, 2.314, 0.0421, 7, "ref")] == ["-", "170", "39.6", "2.31", "0.0421",
                                                                             "7", "ref"]


def test_markdown_table_layout_and_row_check():
    assert markdown_table(["a", "b"], [["1", "2"], ["x", ""]]) == "| a | b |\n|---|---|\n| 1 | 2 |\n| x |  |"
    with pytest.raises(ValueError, match="3 cells for 2 headers"):
        markdown_table(["a", "b"], [["1", "2", "3"]])


def test_lm_table_shows_ratios_to_mamba_ssm_and_errors():
    lm = {"mamba1": {"impls": {
        "qmamba": {"decode_b1_ms": 2.0, "decode_batch_ms": 3.0, "prefill_ms": 20.0, "prefill_eager_ms": 50.0,
                   "train_ms": 85.0, "train_eager_ms": 150.0, "train_peak_gib": 12.0},
        "mamba_ssm": {"decode_b1_ms": 4.0, "decode_batch_ms": 6.0, "prefill_ms": 40.0, "train_ms": 170.0,
                      "train_peak_gib": 16.0},
        "transformers": {"error": "RuntimeError: out of memory"}}}}
    lines = lm_table(lm, OPTIONS).splitlines()
    assert lines[0] == ("| model | implementation | decode b1 ms/token | decode b16 ms/step | prefill 800 ms | "
                        "eager prefill ms | train fwd+bwd 1x800 ms | eager train ms | train peak GiB |")
    assert lines[2] == ("| mamba1 | qmamba | 2.00 (0.50x) | 3.00 (0.50x) | 20.0 (0.50x) | 50.0 | 85.0 (0.50x) | 150 | "
                        "12.0 (0.75x) |")
    assert lines[3] == "| mamba1 | mamba_ssm | 4.00 | 6.00 | 40.0 | - | 170 | - | 16.0 |"
    assert lines[4].startswith("| mamba1 | transformers | error: RuntimeError: out of memory |")
    assert len(lines[4].split("|")) == len(lines[0].split("|"))


def test_lm_table_without_mamba_ssm_has_no_ratios():
    lm = {"mamba2": {"impls": {"qmamba": {"decode_b1_ms": 2.0, "prefill_ms": 20.0}}}}
    assert lm_table(lm, OPTIONS).splitlines()[2] == "| mamba2 | qmamba | 2.00 | - | 20.0 | - | - | - | - |"


def test_vqa_table():
    vqa = {"cobra": {"visual_tokens": 729, "vision_ms": 12.3, "projector_ms": 0.5, "lm_prefill_ms": 30.0,
                     "decode_ms": 9.0, "total_ms": 52.0, "answers_per_s": 400.0,
                     "batch_components": {"vision_ms": 140.0, "projector_ms": 7.0, "lm_prefill_ms": 1000.0,
                                          "decode_ms": 24.0, "total_ms": 1180.0}},
           "qmamba-128": {"error": "RuntimeError: out of memory"}}
    lines = vqa_table(vqa, OPTIONS).splitlines()
    assert lines[2] == "| cobra | 729 | 12.3 | 0.50 | 30.0 | 9.00 | 52.0 | 400 |"
    batch = vqa_batch_table(vqa, OPTIONS).splitlines()
    assert batch[0] == "| preset | vision ms | projector ms | LM prefill ms | decode 5 tok ms | total ms |"
    assert batch[2:] == ["| cobra | 140 | 7.00 | 1000 | 24.0 | 1180 |"], "a preset without figures has no row"


def test_options_reject_unknown_sections_and_peers():
    with pytest.raises(ConfigError, match="unknown section"):
        BenchOptions(sections=("lm-mamba3",))
    with pytest.raises(ConfigError, match="unknown peer"):
        BenchOptions(peers=("flash",))
    resolved = BenchOptions(quick=True, repeats=10).resolved(on_gpu=False)
    assert resolved.tiny and resolved.peers == () and resolved.repeats == 3


def test_options_take_all_presets_and_reject_unknown_ones():
    from qmamba.models.presets import SYSTEMS

    assert {"qmamba-128", "qmamba-729", "qformer-256", "cobra", "vlmamba-bsm", "vlmamba-csm", "mlmamba"} <= set(SYSTEMS)
    assert not any(name.startswith(("tiny-", "micro-")) for name in SYSTEMS), "full-size systems only"
    opts = BenchOptions(presets=("cobra", "all"), train_presets=("all",))
    assert opts.presets[0] == "cobra" and sorted(opts.presets) == sorted(SYSTEMS), "all expands, no name twice"
    assert opts.train_presets == SYSTEMS
    with pytest.raises(ConfigError, match=r"unknown preset\(s\) \['tiny-cobra'\]; choose from all, qmamba-128"):
        BenchOptions(presets=("tiny-cobra",))
    with pytest.raises(ConfigError, match="unknown preset"):
        BenchOptions(train_presets=("qmamba-100",))


def test_vqa_train_section_runs_each_train_preset(monkeypatch):
    from qmamba import bench

    seen = []
    monkeypatch.setattr("qmamba.bench.multimodal.train_step_figures",
                        lambda preset, opts, device: seen.append(preset) or {"step_ms": float(len(seen))})
    results = bench.run_bench(BenchOptions(sections=("vqa-train",), train_presets=("cobra", "qmamba-128"),
                                           device="cpu"), log=lambda *_: None)
    assert seen == ["cobra", "qmamba-128"]
    assert results["vqa_train"] == {"cobra": {"step_ms": 1.0}, "qmamba-128": {"step_ms": 2.0}}


def test_the_vqa_figures_run_with_the_chosen_local_attention(monkeypatch):
    import importlib

    from qmamba import bench

    la = importlib.import_module("qmamba.ops.local_attention")  # the package (qmamba.ops re-exports its function)
    seen = []
    monkeypatch.setattr("qmamba.bench.multimodal.vqa_figures",
                        lambda preset, opts, device, dtype: seen.append(la._CHOICE.get()) or {"total_ms": 1.0})
    for name in ("fused", "naive"):
        results = bench.run_bench(BenchOptions(sections=("vqa",), presets=("cobra",), device="cpu",
                                               local_attention=name), log=lambda *_: None)
        assert results["options"]["local_attention"] == name
        assert ("fused local attention" in render(results)) == (name == "fused")
    assert seen == ["fused", "naive"] and la._CHOICE.get() == "naive", "the choice ends with the run"
    with pytest.raises(ConfigError, match="local attention 'flash'"):
        BenchOptions(local_attention="flash")


def test_train_step_reports_the_length_the_lm_runs(monkeypatch):
    import torch

    from qmamba.bench.multimodal import train_step_figures
    from qmamba.models.mamba_lm import MixerModel

    seen, forward = [], MixerModel.forward
    monkeypatch.setattr(MixerModel, "forward", lambda self, x, *a, **k: seen.append(x.shape) or forward(self, x, *a, **k))
    out = train_step_figures("qmamba-128", BenchOptions(tiny=True, quick=True, repeats=1, warmup=0),
                             torch.device("cpu"), batch=2, text_len=6)
    assert seen and {s[:2] for s in seen} == {(2, out["sequence"])} and out["batch"] == 2


def test_bench_end_to_end_on_cpu(tmp_path, capsys, caplog):
    parser = argparse.ArgumentParser()
    bench_command.add_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args(["--quick", "--device", "cpu", "--out", str(out), "--prompt-len", "24",
                              "--train-len", "24", "--decode-tokens", "3", "--batch-decode", "3", "--vqa-batch", "2",
                              "--question-len", "6", "--answer-tokens", "3", "--presets", "qmamba-128", "--repeats", "1",
                              "--only", "lm-mamba1,lm-mamba2,vqa,vqa-train", "--train-presets", "mlmamba"])
    with caplog.at_level("INFO", logger="qmamba"):
        assert bench_command.run(args) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["errors"] == [] and results["dtype"] == "float32" and results["backend"] == "ref"
    for layer in ("mamba1", "mamba2"):
        figures = results["lm"][layer]["impls"]["qmamba"]
        for key in ("decode_b1_ms", "decode_batch_ms", "prefill_ms", "train_ms", "decode_b1_step_ms"):
            assert isinstance(figures[key], float), (layer, key, figures)
        assert figures["cuda_graphs"] is False and set(results["lm"][layer]["impls"]) == {"qmamba"}
    assert set(results["vqa_train"]) == {"mlmamba"} and results["vqa_train"]["mlmamba"]["step_ms"] > 0
    vqa = results["vqa"]["qmamba-128"]
    assert vqa["visual_tokens"] == 4 and vqa["answers_per_s"] > 0 and vqa["total_ms"] > 0
    parts = {"vision", "projector", "lm_prefill", "decode"}
    assert set(vqa["utilisation"]) == set(vqa["batch_utilisation"]) == parts
    assert vqa["batch_utilisation"]["vision"]["gflop"] == pytest.approx(2 * vqa["utilisation"]["vision"]["gflop"])
    assert vqa["peaks"]["matmul_tflops"] > 0 and "| qmamba-128 | LM prefill |" in printed
    assert printed.rstrip().endswith(render(results).splitlines()[-1])
    assert "| mamba1 | qmamba |" in printed and "| qmamba-128 | 4 |" in printed
    decode = fmt(results["lm"]["mamba1"]["impls"]["qmamba"]["decode_b1_ms"])
    assert f"[bench] mamba1 qmamba: decode_b1_ms {decode}, " in caplog.text, "figures are logged as they come"
    assert "[bench]" not in printed, "progress goes to the log, the tables to stdout"


def test_headline_and_checkpoints_as_figures_come(monkeypatch):
    from qmamba import bench

    assert bench.headline({"decode_b1_ms": 2.314, "cuda_graphs": True, "train_peak_gib": 11.5,
                           "answers_per_s": 85.4}) == "decode_b1_ms 2.31, train_peak_gib 11.5, answers_per_s 85.4"
    assert bench.headline({"error": "RuntimeError: x"}) == "error: RuntimeError: x"
    monkeypatch.setattr("qmamba.bench.multimodal.vqa_figures",
                        lambda p, *a: {"total_ms": 1.0 if p == "cobra" else 2.0})
    snapshots = []
    bench.run_bench(BenchOptions(sections=("vqa",), presets=("cobra", "mlmamba"), device="cpu"), log=lambda *_: None,
                    checkpoint=lambda r: snapshots.append({k: dict(v) for k, v in r["vqa"].items()}))
    assert snapshots == [{"cobra": {"total_ms": 1.0}}, {"cobra": {"total_ms": 1.0}, "mlmamba": {"total_ms": 2.0}}]


def test_measure_briefly_reaches_every_measuring_op(monkeypatch):
    """On CPU (kernels interpreted): after ``measure_briefly`` the gemv, step_in and step_out modules time on two
    weight copies and among their first two candidates; undone afterwards."""
    pytest.importorskip("triton")
    import importlib
    import sys

    import torch

    importlib.import_module("qmamba.ops.runtime.triton_backend")  # what ``available`` imports on a GPU machine
    measuring = [m for name, m in sys.modules.items() if name.startswith("qmamba.ops.")
                 and hasattr(m, "weight_copies") and hasattr(m, "measure_once")]
    assert len(measuring) >= 3, [m.__name__ for m in measuring]  # gemv, step_in, step_out
    with monkeypatch.context() as patch:
        measure_briefly(patch)
        for module in measuring:
            assert len(module.weight_copies(torch.zeros(4, 4))) == 2, module.__name__
            timed = []
            assert module.fastest("abc", lambda c: True, lambda c, seen=timed: seen.append(c) or 1.0) == "a"
            assert timed == ["a", "b"], module.__name__
    assert len(measuring[0].weight_copies(torch.zeros(64, 64))) > 2, "undone after the test"


@pytest.mark.gpu
def test_bench_on_gpu_captures_every_figure(tmp_path, monkeypatch):
    """Tiny shapes, but every figure through its CUDA graph: captured train step, prefill, decode, and each VQA
    component captured into one shared memory pool, for both presets in one process."""
    import torch
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from qmamba.bench import run_bench

    measure_briefly(monkeypatch)

    results = run_bench(BenchOptions(sections=("lm-mamba1", "vqa"), quick=True, tiny=True, peers=(), repeats=1,
                                     decode_tokens=3, prompt_len=24, train_len=24, vqa_batch=2, question_len=6,
                                     answer_tokens=3), log=lambda *_: None)
    assert results["errors"] == []
    figures = results["lm"]["mamba1"]["impls"]["qmamba"]
    assert figures["cuda_graphs"] is True and figures["train_eager_ms"] > 0 and figures["train_ms"] > 0
    for preset in ("qmamba-128", "cobra"):
        vqa = results["vqa"][preset]
        assert vqa["cuda_graphs"] is True and vqa["projector_ms"] > 0 and vqa["answers_per_s"] > 0, (preset, vqa)
        assert vqa["batch_components"]["total_ms"] == vqa["batch_ms"] > 0
    assert "gemv" in results["choices"] and "step_in" in results["choices"], "the decode ops' measured choices"


@pytest.mark.parametrize("preset", ["tiny-mamba", "tiny-mamba2"])
def test_transformers_peer_runs_on_the_same_weights(preset):
    pytest.importorskip("transformers")
    import torch
    from testing_utils import assert_close

    from qmamba import MambaLM
    from qmamba.bench.peers import TransformersRunner
    from qmamba.models.presets import LLM_PRESETS

    model = MambaLM(LLM_PRESETS[preset]()).eval()
    runner = TransformersRunner(model, torch.device("cpu"))
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        assert_close(runner.logits(ids), model(input_ids=ids).logits, 1e-5, f"{preset}: transformers vs qmamba")


def test_decode_ms_is_the_median_of_paired_differences(monkeypatch):
    import torch

    from qmamba.bench import lm

    # (generate n + 1, generate 1) per repeat: one pair is off (a slow short call); the figure is the median
    # of the differences (90 ms over n tokens), not the difference of two medians
    times = iter([100.0, 10.0, 100.0, 10.0, 60.0, 40.0, 101.0, 10.0, 99.0, 10.0])
    monkeypatch.setattr(lm, "time_ms", lambda fn, device, warmup, repeats: next(times))

    class Runner:
        def generate(self, ids, n):
            pass

    opts = BenchOptions(repeats=5, warmup=0, decode_tokens=9)
    assert lm.decode_ms(Runner(), 1, opts, 100, torch.device("cpu")) == pytest.approx(90.0 / 9)


def test_gpu_parity_prints_each_row_as_it_is_measured(monkeypatch, capsys):
    """benchmarks/gpu_parity.py's fixture rows on CPU: each row is on stdout before the next model loads."""

    from qmamba import MambaLM

    parity = benchmark_script("gpu_parity")
    rows_printed_before_load = []

    class Loader:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            rows_printed_before_load.append(capsys.readouterr().out.count("| mamba"))
            return MambaLM.from_pretrained(*args, **kwargs)

    monkeypatch.setattr(parity, "MambaLM", Loader)
    rows = parity.fixtures("cpu")
    assert len(rows) == 4 and capsys.readouterr().out.count("| mamba") == 1
    assert rows_printed_before_load == [0, 1, 1, 1], "each row printed before the next model loads"
