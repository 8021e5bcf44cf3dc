"""The measure-once choice the decode ops share (ops/runtime/measured_choice.py): ``fastest`` keeps the fastest candidate
that matches and skips the ones that fail; ``measure_once`` measures on first use only where it can."""

from __future__ import annotations

import pytest
import torch

from qmamba.ops.runtime.measured_choice import fastest, measure_once

CPU = torch.device("cpu")


def test_measure_once_measures_on_first_use_only():
    cache, calls = {}, []
    measure = lambda: calls.append(1) or "tiles"  # noqa: E731
    assert measure_once(cache, "k", CPU, "default", measure, ("cpu",)) == "tiles"
    assert measure_once(cache, "k", CPU, "default", measure, ("cpu",)) == "tiles"
    assert calls == [1] and cache == {"k": "tiles"}


def test_measure_once_gives_the_default_where_it_cannot_measure():
    cache = {}
    assert measure_once(cache, "k", CPU, "default", lambda: pytest.fail("measured"), ("cuda",)) == "default"
    assert cache == {}, "nothing cached: a later call on a measured device type measures"


def test_a_call_during_the_measurement_or_after_it_failed_gets_the_default():
    cache, seen = {}, []

    def measure():
        seen.append(measure_once(cache, "k", CPU, "default", lambda: pytest.fail("nested"), ("cpu",)))
        raise RuntimeError("no candidate could run")

    with pytest.raises(RuntimeError):
        measure_once(cache, "k", CPU, "default", measure, ("cpu",))
    assert seen == ["default"] and measure_once(cache, "k", CPU, "default", measure, ("cpu",)) == "default"


def test_fastest_keeps_the_fastest_match_and_skips_what_fails(caplog):
    times = {"a": 3.0, "b": 1.0, "c": 0.5, "d": 2.0}

    def matches(c):
        if c == "x":
            raise ValueError("the compiler refuses it")
        return c != "c"  # c is fastest but wrong

    def timed(c):
        if c == "d":
            raise RuntimeError("capture failed")
        return times[c]

    with caplog.at_level("INFO", logger="qmamba"):
        assert fastest(["a", "x", "b", "c", "d"], matches, timed, best="base", best_us=2.0, baseline="the base") == "b"
        assert fastest(["a"], matches, timed, best="base", best_us=2.0, baseline="the base") == "base"
    assert "could not time the candidate d" in caplog.text
    assert "kept the base (2.0 us; 1 timed against 2.0 us)" in caplog.text


def test_measured_choices_reports_every_named_cache_as_text(monkeypatch):
    from qmamba.ops.runtime import measured_choice

    monkeypatch.setattr(measured_choice, "_CACHES", {})
    gemv, empty = measured_choice.choice_cache("gemv"), measured_choice.choice_cache("step_out")
    assert measured_choice.choice_cache("gemv") is gemv and empty == {}
    measure_once(gemv, ((2560, 5120), torch.bfloat16, CPU, False), CPU, None, lambda: {"block_n": 8}, ("cpu",))
    gemv[((192, 5120), torch.bfloat16, CPU, False)] = None
    assert measured_choice.measured_choices() == {"gemv": {"(2560, 5120), torch.bfloat16, cpu, False": {"block_n": 8},
                                                           "(192, 5120), torch.bfloat16, cpu, False": None}}
