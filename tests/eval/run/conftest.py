"""One torch thread for the runner tests: the models are tiny, so a second thread only waits, and when
another process keeps a core busy the default threads make these tests about eight times slower."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
