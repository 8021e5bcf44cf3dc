"""Seeds every test; shared helpers live in testing_utils.py (importable from any test folder)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
