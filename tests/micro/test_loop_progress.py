"""A quiet micro training still reports its progress: one log line at each tenth of its steps."""

from __future__ import annotations

import logging

from qmamba.micro.loop import progress


def test_a_quiet_bar_logs_each_tenth_and_the_end(caplog):
    bar = progress(23, "lm", enabled=False)
    with caplog.at_level(logging.INFO, logger="qmamba"):
        for i in range(23):
            bar.set_postfix(loss=f"{i:.3f}")
            bar.update()
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" steps")[0] for line in lines] == [f"lm: {n}/23" for n in (3, 6, 9, 12, 15, 18, 21, 23)]
    assert lines[-1].endswith(", loss 22.000") and lines[0].endswith(", loss 2.000")
