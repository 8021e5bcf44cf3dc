"""`qmamba serve`'s admission options reach the engine, and a bad one is a one-line error naming the flag."""

from __future__ import annotations

import pytest

import qmamba.serve.server
from qmamba.cli import main


def test_admission_options_reach_the_engine(model_dir, monkeypatch):
    seen = []
    monkeypatch.setattr(qmamba.serve.server, "run", lambda service: seen.append(service))
    assert main(["serve", "--model", str(model_dir), "--device", "cpu", "--max-prefill-batch", "3",
                 "--max-prefill-tokens", "500", "--admit-ratio", "0.5", "--admit-wait-steps", "3"]) == 0
    engine = seen[0].engine
    assert (engine.max_prefill_batch, engine.max_prefill_tokens) == (3, 500)
    assert (engine.admit_ratio, engine.admit_wait_steps) == (0.5, 3)


@pytest.mark.parametrize("flag", ["--max-prefill-batch", "--max-prefill-tokens"])
def test_a_non_positive_admission_bound_is_one_line(model_dir, flag, capsys):
    assert main(["serve", "--model", str(model_dir), flag, "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and "must be > 0" in err[0]


@pytest.mark.parametrize("flag", ["--admit-ratio", "--admit-wait-steps"])
def test_a_negative_admission_setting_is_one_line(model_dir, flag, capsys):
    assert main(["serve", "--model", str(model_dir), flag, "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and "must be >= 0" in err[0]
