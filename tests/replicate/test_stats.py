"""The interval over seeds against hand-computed values, and the rules that turn intervals into verdicts."""

from __future__ import annotations

import math

import pytest

from qmamba.replicate.stats import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Interval,
    compare,
    mean_ci,
    sign_of,
    t_quantile_975,
)


def test_mean_ci_hand_computed():
    # [1, 2, 3]: mean 2, s = 1, t_{0.975,2} = 4.3027 -> 4.3027 / sqrt(3) = 2.48417
    iv = mean_ci([1.0, 2.0, 3.0])
    assert iv.mean == pytest.approx(2.0) and iv.n == 3
    assert iv.half == pytest.approx(4.3027 / math.sqrt(3), abs=1e-4)
    assert iv.half == pytest.approx(2.48417, abs=1e-4)
    # [10, 12]: mean 11, s = sqrt(2), t_{0.975,1} = 12.7062 -> half 12.7062
    two = mean_ci([10.0, 12.0])
    assert (two.mean, two.low, two.high) == pytest.approx((11.0, 11.0 - 12.7062, 11.0 + 12.7062), abs=1e-4)
    # [60, 62, 64, 66]: mean 63, s = sqrt(20/3), t_{0.975,3} = 3.1824 -> 3.1824 * 2.58199 / 2 = 4.10838
    assert mean_ci([60, 62, 64, 66]).half == pytest.approx(4.10838, abs=1e-4)


def test_mean_ci_edges():
    assert mean_ci([]) == Interval(None, None, 0)
    one = mean_ci([5.0])
    assert (one.mean, one.half, one.n) == (5.0, None, 1)
    assert mean_ci([4.0, None, 4.0]) == Interval(4.0, 0.0, 2)  # missing values are left out
    assert one.text() == "5.0" and mean_ci([1.0, 2.0, 3.0]).text() == "2.0 ± 2.5"


def test_t_quantile_table_and_expansion():
    assert t_quantile_975(1) == pytest.approx(12.7062) and t_quantile_975(30) == pytest.approx(2.0423)
    assert t_quantile_975(60) == pytest.approx(2.0003, abs=2e-4)  # Student t, 60 degrees of freedom
    assert t_quantile_975(10 ** 6) == pytest.approx(1.95996, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_compare_and_sign():
    high, low, mid = Interval(80.0, 2.0, 3), Interval(70.0, 2.0, 3), Interval(76.0, 5.0, 3)
    assert compare(high, low) == REPRODUCED
    assert compare(low, high) == NOT_REPRODUCED
    assert compare(high, mid) == INCONCLUSIVE and compare(mid, low) == INCONCLUSIVE
    assert compare(Interval(80.0, None, 1), low) == INCONCLUSIVE  # one seed: no interval, no verdict
    assert sign_of(Interval(1.0, 0.5, 3)) == REPRODUCED
    assert sign_of(Interval(-1.0, 0.5, 3)) == NOT_REPRODUCED
    assert sign_of(Interval(0.2, 0.5, 3)) == INCONCLUSIVE
