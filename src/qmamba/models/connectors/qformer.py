"""Q-Former-style connector: the Q-Mamba block with self-attention among the queries in place of the
Mamba layer (BLIP-2 style, bidirectional unless ``causal``), so the Mamba layer's value can be measured."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from qmamba.models.connectors.attention import SelfAttention
from qmamba.models.connectors.qmamba import QMambaConfig, QueryConnector


@dataclass
class QFormerConfig(QMambaConfig):
    type: str = "qformer"
    causal: bool = False


class QFormerConnector(QueryConnector):
    def make_mixer(self, layer_idx: int, device=None, dtype=None) -> nn.Module:
        return SelfAttention(self.cfg.width, self.cfg.n_heads, causal=self.cfg.causal, device=device, dtype=dtype)
