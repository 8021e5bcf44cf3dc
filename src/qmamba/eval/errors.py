"""Errors raised when evaluation files cannot be read or scored as given.

Each message names the file, the field (or record) at fault and the fix. They subclass
``qmamba.errors.QMambaError`` so the CLI prints them without a stack trace.
"""

from __future__ import annotations

from qmamba.errors import QMambaError


class EvalFileError(QMambaError, ValueError):
    """A questions, annotations or predictions file has the wrong format or lacks a field."""


class PredictionMismatchError(QMambaError, ValueError):
    """Predictions and annotations do not line up: unknown ids, duplicates, missing answers."""


class EmptyPredictionsError(PredictionMismatchError):
    """The predictions file holds no records at all."""


class EvalOptionError(QMambaError, ValueError):
    """An unknown task, or an option a scorer does not take."""
