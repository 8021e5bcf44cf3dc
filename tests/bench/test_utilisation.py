"""The bench's utilisation figures: product FLOPs counted on the reference ops equal the hand count, a
component's work grows with the batch as the bench assumes, and the rates are the work over the time."""

from __future__ import annotations

import pytest
import torch
from testing_utils import tiny_lm
from torch import nn

from qmamba.bench.multimodal import component_work
from qmamba.bench.options import BenchOptions
from qmamba.bench.report import utilisation_table
from qmamba.bench.utilisation import Work, count_flops, measure_peaks, rates, weight_bytes
from qmamba.models.splice import image_column, splice_at_column


def _linears(model: nn.Module, tokens: int) -> int:
    """2 x tokens x in x out for every Linear but the head (a multiply-add is two FLOPs)."""
    return sum(2 * tokens * m.in_features * m.out_features for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and "lm_head" not in name)


def test_mamba1_prefill_and_step_flops_equal_the_hand_count():
    lm = tiny_lm({})
    length = 13
    ids = torch.randint(0, 97, (1, length))
    conv = sum(2 * length * m.weight.shape[0] * m.weight.shape[-1] for m in lm.modules() if isinstance(m, nn.Conv1d))
    head = 2 * lm.lm_head.in_features * lm.lm_head.out_features  # last position only
    assert conv > 0 and count_flops(lambda: lm.prefill(ids)) == _linears(lm, length) + conv + head
    cache = lm.prefill(ids)[1]
    # one token: every projection once and the head; the conv step is a rolling update, not a product
    assert count_flops(lambda: lm.step(ids[:, -1], cache)) == _linears(lm, 1) + head


def test_weight_bytes_count_a_tied_weight_once():
    lm = tiny_lm({})
    assert lm.lm_head.weight is lm.backbone.embedding.weight
    unique = {p.data_ptr(): p for p in lm.parameters()}
    assert weight_bytes(lm) == sum(p.numel() * 4 for p in unique.values())
    assert weight_bytes(lm) < sum(p.numel() * 4 for p in lm.parameters()) + lm.lm_head.weight.numel() * 4


def test_component_work_grows_with_the_batch_as_counted():
    from qmamba.bench.multimodal import build_multimodal, vqa_inputs

    opts = BenchOptions(tiny=True, presets=("qmamba-128",))
    model = build_multimodal("qmamba-128", opts, torch.device("cpu"), None)
    ids, pixels = vqa_inputs(model, 2, 6, torch.device("cpu"), 0)
    with torch.inference_mode():
        work = component_work(model, ids[:1], pixels[:1], 2, answer_tokens=3)
        assert work["vision"].flops == count_flops(lambda: model.vision(pixels)) > 0
        features = model.vision(pixels)  # (2, p, d)
        assert work["projector"].flops == count_flops(lambda: model.connector(features)) > 0
        embeds = splice_at_column(model.llm.embed(ids.clamp(min=0)), model.connector(features), image_column(ids))
        assert work["lm_prefill"].flops == count_flops(lambda: model.llm.prefill(inputs_embeds=embeds)) > 0
        one = component_work(model, ids[:1], pixels[:1], 1, answer_tokens=3)
    assert work["decode"].flops == 2 * one["decode"].flops > 0  # 2 steps of 2 rows against 2 steps of 1
    for name in ("vision", "projector", "lm_prefill"):  # the weights once, the activations per row
        weights = 2 * one[name].bytes - work[name].bytes
        assert weights == weight_bytes({"vision": model.vision, "projector": model.connector,
                                        "lm_prefill": model.llm}[name]), name


def test_rates_are_the_work_over_the_time():
    peaks = {"matmul_tflops": 800.0, "copy_gbs": 3000.0}
    r = rates(Work(4e12, 3e9), 10.0, peaks)
    assert r["tflops"] == pytest.approx(400.0) and r["matmul_frac"] == pytest.approx(0.5)
    assert r["gbs"] == pytest.approx(300.0) and r["copy_frac"] == pytest.approx(0.1)
    table = utilisation_table({"qmamba-128": {"utilisation": {"vision": r}, "batch_utilisation": {"vision": r}}},
                              {"vqa_batch": 64})
    assert "| qmamba-128 | vision | 400 (50%) | 300 (10%) | 400 (50%) | 300 (10%) |" in table


def test_measured_peaks_are_the_products_over_their_time(monkeypatch):
    from qmamba.bench import utilisation

    monkeypatch.setattr(utilisation, "time_ms", lambda fn, device, warmup, repeats: (fn(), 2.0)[1])
    peaks = measure_peaks(torch.device("cpu"), torch.float32, matmul_n=64, copy_mib=1)
    assert peaks["matmul_tflops"] == pytest.approx(2 * 64**3 / 2.0 / 1e9)
    assert peaks["copy_gbs"] == pytest.approx(2 * 2**20 / 2.0 / 1e6)
