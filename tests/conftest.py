"""Seeds every test; shared helpers live in testing_utils.py (importable from any test folder)."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels then run in Triton's interpreter (tiny sizes only); must be set before triton loads.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _gpu_measures_briefly(request, monkeypatch):
    """GPU tests choose decode tiles among two candidates (``testing_utils.measure_briefly``): at test shapes the
    full sweep spends minutes per new weight shape and checks nothing more."""
    if torch.cuda.is_available() and request.node.get_closest_marker("gpu"):
        from testing_utils import measure_briefly

        measure_briefly(monkeypatch)
