"""10-way accuracy, Python-2 rounding, average precision and F1 on hand-computed cases."""

from __future__ import annotations

import pytest

from qmamba.eval.tasks.metrics import average_precision, f1_binary, leave_one_out_accuracy, percent, round_py2


@pytest.mark.parametrize("m, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_closed_form(m, expected):
    answers = ["red"] * m + ["blue"] * (10 - m)
    assert leave_one_out_accuracy("red", answers) == pytest.approx(expected, abs=1e-12)


def test_leave_one_out_equal_keys_are_all_dropped():
    # two identical GT dicts (same key): each drops both from its "others"
    # red entries: 0 matches among others -> 0; 8 blue entries: 2 matches -> 2/3; mean = 8*(2/3)/10
    answers = ["red", "red"] + ["blue"] * 8
    keys = ["k1", "k1"] + [f"b{i}" for i in range(8)]
    assert leave_one_out_accuracy("red", answers, keys) == pytest.approx(16 / 30)
    assert leave_one_out_accuracy("red", answers) == pytest.approx(0.6)


def test_round_py2_sends_exact_ties_away_from_zero():
    assert round_py2(0.125, 2) == 0.13 and round(0.125, 2) == 0.12
    assert round_py2(-0.125, 2) == -0.13
    assert round_py2(2.675, 2) == 2.67  # 2.675 is stored as 2.67499999...
    assert round_py2(43.3333333, 2) == 43.33


def test_percent_is_100_sum_over_len():
    assert percent([1.0, 0.3, 0.0]) == pytest.approx(43.333333333)
    assert percent([]) is None


@pytest.mark.parametrize("y, s, ap", [
    ([1, 1, 0, 0], [1, 0, 1, 0], 0.5),                # R .5 P .5, then R 1 P .5
    ([1, 1, 1, 0], [1, 1, 0, 0], 2 / 3 + 1 / 3 * 0.75),  # R 2/3 P 1, then R 1 P 3/4
    ([1, 0, 0, 0], [0, 0, 0, 0], 0.25),               # one threshold: P = positives / all
    ([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], 0.5 + 0.5 * 2 / 3),
    ([0, 0], [1, 0], 0.0),                            # no positive labels
])
def test_average_precision_hand_cases(y, s, ap):
    assert average_precision(y, s) == pytest.approx(ap)


@pytest.mark.parametrize("y, p, f1", [
    ([1, 1, 0, 0], [1, 0, 1, 0], 0.5),   # tp 1 fp 1 fn 1
    ([1, 1, 1, 0], [1, 1, 0, 0], 0.8),   # tp 2 fp 0 fn 1
    ([1, 0, 0, 0], [0, 0, 0, 0], 0.0),
    ([0, 0], [0, 0], 0.0),               # 0/0 -> 0 as sklearn's zero_division default
])
def test_f1_hand_cases(y, p, f1):
    assert f1_binary(y, p) == pytest.approx(f1)
