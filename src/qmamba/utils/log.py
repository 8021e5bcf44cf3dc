"""How a ``qmamba`` command reports as it runs: the ``qmamba`` logger's INFO messages (DEBUG with ``--debug``)
on stderr with the time, and progress bars that stay readable in a log file.

A progress bar on a terminal redraws in place; written to a file or a pipe each redraw is kept, so a bar that
redraws ten times a second fills the log. Off a terminal, bars redraw at most once per ``FILE_BAR_INTERVAL_S``.
The bars are tqdm's, which reads its defaults from ``TQDM_*`` environment variables when it is first imported:
``setup_logging`` must run before that (the CLI calls it before importing a command).
"""

from __future__ import annotations

import logging
import os
import sys

FILE_BAR_INTERVAL_S = 30
_HANDLER_NAME = "qmamba-cli"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (it may be replaced after setup)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(debug: bool = False) -> logging.Logger:
    """Send the ``qmamba`` logger's records to stderr (once per process, whoever calls it again) and slow
    progress bars down when stderr is not a terminal. Returns the logger."""
    log = logging.getLogger("qmamba")
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    if not any(h.get_name() == _HANDLER_NAME for h in log.handlers):
        handler = _StderrHandler()
        handler.set_name(_HANDLER_NAME)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        log.addHandler(handler)
    if not _is_terminal(sys.stderr):
        os.environ.setdefault("TQDM_MININTERVAL", str(FILE_BAR_INTERVAL_S))
    return log


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a file
        return False
