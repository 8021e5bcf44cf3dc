"""Data: image loading and preprocessing, chat templates, datasets.

Names are imported on first use, so importing one submodule does not pull in torch or PIL for another.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_image": "qmamba.data.image",
    "preprocess": "qmamba.data.image",
    "ImageTransformConfig": "qmamba.data.image",
    "MultiImageTransform": "qmamba.data.image",
    "Processor": "qmamba.data.processor",
    "load_tokenizer": "qmamba.data.tokenizer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qmamba.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
