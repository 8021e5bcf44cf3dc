"""Mean and Student-t confidence interval over seeds, and the rule that turns two intervals into a verdict.

``mean_ci(values)`` is mean +- t_{0.975, n-1} * s / sqrt(n), with s the sample standard deviation (n - 1 in
the denominator). One value has no interval (half-width None); missing values (None) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# t_{0.975, df} for df = 1..30 (two-sided 95%), from the Student t quantile function
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table up to 30, then the Cornish-Fisher expansion around the normal quantile."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class Interval:
    """mean +- half (half None: fewer than two values); n values went in."""

    mean: float | None
    half: float | None
    n: int

    @property
    def low(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean - self.half

    @property
    def high(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean + self.half

    def to_dict(self) -> dict:
        return {"mean": self.mean, "ci95": self.half, "low": self.low, "high": self.high, "n": self.n}

    def text(self, digits: int = 1) -> str:
        if self.mean is None:
            return "–"
        return f"{self.mean:.{digits}f}" + ("" if self.half is None else f" ± {self.half:.{digits}f}")


def mean_ci(values: Sequence[float | None]) -> Interval:
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    n = len(xs)
    if n == 0:
        return Interval(None, None, 0)
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, None, 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return Interval(mean, t_quantile_975(n - 1) * sd / math.sqrt(n), n)


REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"


def compare(a: Interval, b: Interval) -> str:
    """The claim "a > b": reproduced when a's interval lies wholly above b's, not reproduced when wholly below,
    inconclusive when they overlap (or either has no interval: one seed or none)."""
    if a.low is None or b.low is None:
        return INCONCLUSIVE
    if a.low > b.high:
        return REPRODUCED
    if a.high < b.low:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def sign_of(d: Interval) -> str:
    """The claim "d > 0" for a per-seed difference: reproduced when its interval excludes 0 above, not
    reproduced when it excludes 0 below, inconclusive when it contains 0."""
    return compare(d, Interval(0.0, 0.0, 2))
