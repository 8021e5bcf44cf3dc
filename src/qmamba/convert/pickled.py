"""Reading pickled checkpoints as tensors only.

``torch.load(weights_only=True)`` unpickles dicts, lists, numbers, strings and tensors and nothing else: a pickle
that names any other callable (a ``__reduce__`` payload, a pickled class, an optimizer object) is refused before
anything it names runs. The refusal becomes a ``CheckpointError`` that names the file, the reason and the fix.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from qmamba.errors import CheckpointError


def load_tensors_only(file: Path, what: str):
    """The object pickled in ``file`` (tensors on CPU, memory-mapped when the file allows it)."""
    if not file.is_file():
        raise CheckpointError(f"{what}: {file} does not exist")
    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # files saved before torch's zip format cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next((line.strip() for line in str(e).splitlines() if "Unsupported" in line or "global" in line),
                      str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise CheckpointError(
            f"{what}: {file} needs more than tensors to unpickle ({reason[:300]}); qmamba loads pickles with "
            f"weights_only=True and never runs code from a checkpoint. Fix: on a machine you trust, load it with "
            f"its own code and re-save only the tensors (torch.save of a dict of tensors, or safetensors)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{what}: cannot read {file}: {type(e).__name__}: {str(e)[:300]}") from None
