"""VL-Mamba's MultiModal Connector (MMC): a Vision Selective Scan (VSS) over the 2-D patch grid
between linear layers. Variants (VL-Mamba, Sec. 3):

    mlp:      out = MLP(V)
    vss-mlp:  out = MLP(LayerNorm(VSS(V) + V))                      the VSS runs at the vision width
    vss-l2:   V' = Linear(V);  out = Linear(LayerNorm(VSS(GELU(V')) + V'))

The VSS is one Mamba layer scanning the raster sequence in several orders: ``bsm`` forward and
backward, ``csm`` row-major and column-major, each forward and backward (``MultiScanMamba``).
``active_scans`` restricts the orders at inference (Q-Mamba paper, Table 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from qmamba.errors import ConfigError, InputError
from qmamba.models.connectors.mlp import mlp_layers
from qmamba.models.mamba1 import Mamba1Config
from qmamba.models.multiscan import SCAN_ORDERS, MultiScanMamba

VARIANTS = ("mlp", "vss-mlp", "vss-l2")


@dataclass
class VLMambaConfig:
    type: str = "vlmamba"
    variant: str = "vss-l2"
    scan: str = "bsm"
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    d_out: int | None = None  # output width; None: the LLM's d_model
    active_scans: list[str] | None = None

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ConfigError(f"vlmamba connector: variant={self.variant!r}; expected one of {VARIANTS}")
        if self.scan not in SCAN_ORDERS:
            raise ConfigError(f"vlmamba connector: scan={self.scan!r}; expected one of {tuple(SCAN_ORDERS)}")
        bad = set(self.active_scans or ()) - set(SCAN_ORDERS[self.scan])
        if bad:
            raise ConfigError(f"vlmamba connector: active_scans {sorted(bad)} are not scans of "
                              f"{self.scan!r} {SCAN_ORDERS[self.scan]}")


def patch_grid(num_patches: int) -> tuple[int, int]:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise InputError(f"{num_patches} patches do not form a square grid; 2-D scans need a square one")
    return side, side


class VLMambaConnector(nn.Module):
    """(b, p, d_vision) -> (b, p, d_out)."""

    def __init__(self, cfg: VLMambaConfig, d_vision: int, d_model: int, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        d_out = cfg.d_out or d_model
        self.d_out = d_out
        fk = {"device": device, "dtype": dtype}
        mcfg = Mamba1Config(d_state=cfg.d_state, expand=cfg.expand, d_conv=cfg.d_conv)
        orders = SCAN_ORDERS[cfg.scan]
        if cfg.variant == "mlp":
            self.mlp = mlp_layers("gelu-mlp", d_vision, d_out, **fk)
        elif cfg.variant == "vss-mlp":
            self.vss = MultiScanMamba(mcfg, d_vision, orders, **fk)
            self.norm = nn.LayerNorm(d_vision, **fk)
            self.mlp = mlp_layers("gelu-mlp", d_vision, d_out, **fk)
        else:
            self.linear_in = nn.Linear(d_vision, d_out, **fk)
            self.vss = MultiScanMamba(mcfg, d_out, orders, **fk)
            self.norm = nn.LayerNorm(d_out, **fk)
            self.linear_out = nn.Linear(d_out, d_out, **fk)

    def forward(self, features: Tensor) -> Tensor:
        v = self.cfg.variant
        if v == "mlp":
            return self.mlp(features)
        grid = patch_grid(features.shape[1]) if self.cfg.scan == "csm" else None
        active = tuple(self.cfg.active_scans) if self.cfg.active_scans else None
        if v == "vss-mlp":
            return self.mlp(self.norm(self.vss(features, grid, active) + features))
        h = self.linear_in(features)  # (b, p, d_out)
        return self.linear_out(self.norm(self.vss(nn.functional.gelu(h), grid, active) + h))

    def num_tokens(self, num_patches: int) -> int:
        return num_patches
