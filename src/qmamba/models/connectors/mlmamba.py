"""ML-Mamba's Mamba-2 Scan Connector (MSC), with ML-Mamba's parameter names:

    mlp:                  Linear(d_vision -> d) + GELU
    bidirectional_mamba:  n_layer x [h += BiMamba2(h);  h += SwiGLU(LayerNorm(h))], then norm_f
    projector:            fused-gelu-mlp (d -> 4d -> d -> d)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from qmamba.errors import ConfigError
from qmamba.models.connectors.mlp import MLPConfig, MLPConnector
from qmamba.models.mamba2 import Mamba2Config
from qmamba.models.multiscan import BiMamba2


@dataclass
class MLMambaConfig:
    type: str = "mlmamba"
    n_layer: int = 2
    d_state: int = 128
    headdim: int = 64
    expand: int = 2
    ngroups: int = 1
    chunk_size: int = 256
    active_scans: list[str] | None = None  # inference: ["forward"] or ["backward"]

    def __post_init__(self):
        bad = set(self.active_scans or ()) - {"forward", "backward"}
        if bad:
            raise ConfigError(f"mlmamba connector: active_scans {sorted(bad)}; use 'forward' and/or 'backward'")


class SwiGLU(nn.Module):
    def __init__(self, d: int, device=None, dtype=None):
        super().__init__()
        self.w1 = nn.Linear(d, d, device=device, dtype=dtype)
        self.w2 = nn.Linear(d, d, device=device, dtype=dtype)
        self.w3 = nn.Linear(d, d, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class MSCLayer(nn.Module):
    def __init__(self, mcfg: Mamba2Config, d: int, device=None, dtype=None):
        super().__init__()
        self.mixer = BiMamba2(mcfg, d, device=device, dtype=dtype)
        self.norm = nn.LayerNorm(d, device=device, dtype=dtype)
        self.mlp = SwiGLU(d, device=device, dtype=dtype)

    def forward(self, h: Tensor, active) -> Tensor:
        h = h + self.mixer(h, active)  # ML-Mamba puts no norm before the mixer
        return h + self.mlp(self.norm(h))


class BidirectionalMamba(nn.Module):
    def __init__(self, mcfg: Mamba2Config, d: int, n_layer: int, device=None, dtype=None):
        super().__init__()
        self.layers = nn.ModuleList(MSCLayer(mcfg, d, device, dtype) for _ in range(n_layer))
        self.norm_f = nn.LayerNorm(d, device=device, dtype=dtype)

    def forward(self, h: Tensor, active) -> Tensor:
        for layer in self.layers:
            h = layer(h, active)
        return self.norm_f(h)


class MLMambaConnector(nn.Module):
    """(b, p, d_vision) -> (b, p, d_model)."""

    def __init__(self, cfg: MLMambaConfig, d_vision: int, d_model: int, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        fk = {"device": device, "dtype": dtype}
        mcfg = Mamba2Config(d_state=cfg.d_state, headdim=cfg.headdim, expand=cfg.expand, ngroups=cfg.ngroups,
                            chunk_size=cfg.chunk_size)
        self.mlp = nn.Sequential(nn.Linear(d_vision, d_model, **fk), nn.GELU())
        self.bidirectional_mamba = BidirectionalMamba(mcfg, d_model, cfg.n_layer, **fk)
        self.projector = MLPConnector(MLPConfig(arch="fused-gelu-mlp"), d_model, d_model, **fk)

    def forward(self, features: Tensor) -> Tensor:
        active = tuple(self.cfg.active_scans) if self.cfg.active_scans else None
        return self.projector(self.bidirectional_mamba(self.mlp(features), active))

    def num_tokens(self, num_patches: int) -> int:
        return num_patches
