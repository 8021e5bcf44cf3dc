"""Shared test helpers: seeding, relative error, fixture paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float, what: str = "") -> None:
    """Relative-error check that reports max and mean absolute differences when it fails."""
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    assert torch.isfinite(a).all(), f"{what}: non-finite values"
    err = rel_err(a, b)
    diff = (a.double() - b.double()).abs()
    assert err <= tol, f"{what}: rel err {err:.3g} > {tol:.1g} (max abs {diff.max():.3g}, mean abs {diff.mean():.3g})"
