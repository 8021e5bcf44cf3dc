"""qmamba: Querying Mamba and the Mamba multimodal LLMs around it.

    lm = qmamba.MambaLM.from_pretrained("path/to/mamba")
    qmamba.generate(lm, input_ids, max_new_tokens=32)

The heavy modules are imported on first use, so ``import qmamba`` and ``qmamba --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "MambaLM": "qmamba.models.mamba_lm",
    "MambaLMConfig": "qmamba.models.mamba_lm",
    "MultimodalModel": "qmamba.models.multimodal",
    "MultimodalConfig": "qmamba.models.multimodal",
    "presets": "qmamba.models.presets",
    "QMambaError": "qmamba.errors",
    "generate": "qmamba.infer.generate",
    "stream": "qmamba.infer.generate",
}

__all__ = ["MambaLM", "MambaLMConfig", "MultimodalConfig", "MultimodalModel", "QMambaError", "generate", "presets",
           "stream"]

if TYPE_CHECKING:  # pragma: no cover
    from qmamba.errors import QMambaError
    from qmamba.infer.generate import generate, stream
    from qmamba.models import presets
    from qmamba.models.mamba_lm import MambaLM, MambaLMConfig
    from qmamba.models.multimodal import MultimodalConfig, MultimodalModel


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qmamba' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    return module if name == "presets" else getattr(module, name)
