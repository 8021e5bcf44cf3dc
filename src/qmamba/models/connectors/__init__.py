"""Cross-modal connectors: each maps visual features (b, p, d_vision) to LLM tokens (b, n, d_model).

A connector has a small config dataclass whose ``type`` names it here, a constructor
``(cfg, d_vision, d_model, device=None, dtype=None)``, ``forward(features)`` and
``num_tokens(num_patches)``. The multimodal model does not care which one it holds.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from qmamba.errors import ConfigError
from qmamba.models.connectors.mlmamba import MLMambaConfig, MLMambaConnector
from qmamba.models.connectors.mlp import MLPConfig, MLPConnector
from qmamba.models.connectors.qformer import QFormerConfig, QFormerConnector
from qmamba.models.connectors.qmamba import QMambaConfig, QMambaConnector
from qmamba.models.connectors.vlmamba import VLMambaConfig, VLMambaConnector
from qmamba.utils.config import config_from_dict

CONNECTORS: dict[str, tuple[type, type[nn.Module]]] = {
    "mlp": (MLPConfig, MLPConnector),
    "vlmamba": (VLMambaConfig, VLMambaConnector),
    "mlmamba": (MLMambaConfig, MLMambaConnector),
    "qmamba": (QMambaConfig, QMambaConnector),
    "qformer": (QFormerConfig, QFormerConnector),
}

ConnectorConfig = MLPConfig | VLMambaConfig | MLMambaConfig | QMambaConfig | QFormerConfig


def connector_config(data: dict[str, Any] | ConnectorConfig, where: str = "connector") -> ConnectorConfig:
    """The typed config for ``data`` (a dict with a ``type`` field, or a config already)."""
    if not isinstance(data, dict):
        return data
    kind = data.get("type")
    if kind not in CONNECTORS:
        raise ConfigError(f"{where}.type={kind!r}; expected one of {sorted(CONNECTORS)}")
    return config_from_dict(CONNECTORS[kind][0], data, where)


def build_connector(cfg: dict[str, Any] | ConnectorConfig, d_vision: int, d_model: int,
                    device=None, dtype=None) -> nn.Module:
    cfg = connector_config(cfg)
    return CONNECTORS[cfg.type][1](cfg, d_vision, d_model, device=device, dtype=dtype)


__all__ = ["CONNECTORS", "ConnectorConfig", "build_connector", "connector_config"] + [
    c.__name__ for pair in CONNECTORS.values() for c in pair
]
