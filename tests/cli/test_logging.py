"""Every command logs the qmamba logger's INFO messages (DEBUG with --debug), and progress bars redraw rarely
when stderr is a file or a pipe, so a log file is not flooded."""

from __future__ import annotations

import logging
import subprocess
import sys

from qmamba.cli import main


def test_every_command_logs_info_messages(monkeypatch, capsys):
    def run(args):
        logging.getLogger("qmamba.eval").info("answered %d questions", 3)
        logging.getLogger("qmamba").debug("a detail")
        return 0

    monkeypatch.setattr("qmamba.commands.info.run", run)
    assert main(["info"]) == 0
    err = capsys.readouterr().err
    assert "answered 3 questions" in err and "a detail" not in err
    assert main(["info", "--debug"]) == 0
    assert "a detail" in capsys.readouterr().err
    logging.getLogger("qmamba").setLevel(logging.INFO)


def test_progress_bars_redraw_rarely_off_a_terminal():
    code = ("import sys, time\nimport qmamba.commands.info as info\n"
            "def run(args):\n    from tqdm import tqdm\n    for _ in tqdm(range(40)):\n        time.sleep(0.03)\n"
            "    return 0\ninfo.run = run\nfrom qmamba.cli import main\nsys.exit(main(['info']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)  # bytes: keep each \r
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(b"\r") <= 3, done.stderr  # the first and the last draw (tqdm's default: every 0.1 s)
    assert b"40/40" in done.stderr
