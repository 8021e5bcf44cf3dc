"""LLaVA / Cobra projectors: ``linear``, ``gelu-mlp``, ``fused-gelu-mlp`` (prismatic's names and layout:
``projector`` is the Linear or the Sequential, so Cobra checkpoints load by name)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from qmamba.errors import ConfigError

ARCHS = ("linear", "gelu-mlp", "fused-gelu-mlp")


@dataclass
class MLPConfig:
    type: str = "mlp"
    arch: str = "gelu-mlp"

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ConfigError(f"mlp connector: arch={self.arch!r}; expected one of {ARCHS}")


def mlp_layers(arch: str, d_in: int, d_out: int, device=None, dtype=None) -> nn.Module:
    fk = {"device": device, "dtype": dtype}
    if arch == "linear":
        return nn.Linear(d_in, d_out, **fk)
    if arch == "gelu-mlp":
        return nn.Sequential(nn.Linear(d_in, d_out, **fk), nn.GELU(), nn.Linear(d_out, d_out, **fk))
    return nn.Sequential(  # fused-gelu-mlp: widen 4x on the (fused) vision width first
        nn.Linear(d_in, 4 * d_in, **fk), nn.GELU(), nn.Linear(4 * d_in, d_out, **fk), nn.GELU(),
        nn.Linear(d_out, d_out, **fk),
    )


class MLPConnector(nn.Module):
    """(b, p, d_vision) -> (b, p, d_model): one token per patch."""

    def __init__(self, cfg: MLPConfig, d_vision: int, d_model: int, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        self.projector = mlp_layers(cfg.arch, d_vision, d_model, device, dtype)

    def forward(self, features: Tensor) -> Tensor:
        return self.projector(features)

    def num_tokens(self, num_patches: int) -> int:
        return num_patches
