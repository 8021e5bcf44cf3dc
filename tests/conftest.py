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
