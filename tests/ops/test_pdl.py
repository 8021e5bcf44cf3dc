"""When the decode kernels launch with programmatic dependent launch: CUDA on Hopper or later, not in Triton's
interpreter, not with QMAMBA_PDL=0; off, no launch option is passed at all."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from qmamba.ops.runtime import pdl


def test_off_on_cpu_and_options_only_when_on():
    assert not pdl.enabled(torch.device("cpu"))
    assert pdl.launch_options(False) == {} and pdl.launch_options(True) == {"launch_pdl": True}


@pytest.mark.parametrize("env,want", [({}, True), ({"QMAMBA_PDL": "0"}, False), ({"TRITON_INTERPRET": "1"}, False),
                                      ({"QMAMBA_PDL": "1"}, True)])
def test_switches_on_a_hopper_gpu(monkeypatch, env, want):
    monkeypatch.setattr(pdl, "_device_ok", lambda index: index == 0)  # a Hopper GPU at index 0
    for key in ("QMAMBA_PDL", "TRITON_INTERPRET"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert pdl.enabled(torch.device("cuda", 0)) is want
    assert not pdl.enabled(torch.device("cuda", 1)), "an older GPU"
