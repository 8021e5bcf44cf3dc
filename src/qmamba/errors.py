"""Errors qmamba raises for bad input.

Every error a user can cause is a ``QMambaError``: one message that names the file or
field at fault and the fix. The CLI prints the message alone, without a stack trace.
"""

from __future__ import annotations


class QMambaError(Exception):
    """Base class: a problem with the user's input, files or configuration."""


class ConfigError(QMambaError, ValueError):
    """A configuration field is missing, unknown or inconsistent."""


class CheckpointError(QMambaError):
    """A checkpoint directory or weights file cannot be used as asked."""


class InputError(QMambaError, ValueError):
    """A prompt, image or tensor given to a model does not fit it."""
