"""Querying Mamba (Q-Mamba), the cross-modal projector of Eom et al. (EMNLP Findings 2024):

    visual (b, p, d_vision) --[optional VL-Mamba connector, bidirectional]--> kv (b, p, d_kv)
    queries (n_queries, width), learnable
    n_layer x QueryBlock[causal Mamba over the queries -> cross-attention to kv -> FFN]
    norm_f -> proj (width -> d_model)                             -> (b, n_queries, d_model)

The cross-attention mask is ``local`` (query i sees its own slice of the patches, Figure 3) or
``global``. With width 768 and 24 layers the Mamba layers match mamba-130m and can be copied from it
(``load_mamba_layers``). The preprocessing connector can be copied from a trained VL-Mamba
connector (``load_preprocess``) and run forward- or backward-only at inference (Table 4).
``forward_with_weights`` also returns each block's cross-attention weights, with either mask, for attention maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from qmamba.errors import CheckpointError, ConfigError
from qmamba.models.connectors.query_block import QueryBlock
from qmamba.models.connectors.vlmamba import VLMambaConfig, VLMambaConnector
from qmamba.models.mamba1 import Mamba, Mamba1Config
from qmamba.models.norm import RMSNorm

ATTENTION = ("local", "global")


@dataclass
class QMambaConfig:
    type: str = "qmamba"
    n_queries: int = 128
    width: int = 768
    n_layer: int = 24
    n_heads: int = 12
    attention: str = "local"
    ffn_mult: int = 4  # 0: no FFN in the blocks
    d_state: int = 16
    expand: int = 2
    d_conv: int = 4
    norm_eps: float = 1e-5
    preprocess: VLMambaConfig | None = field(default=None)

    def __post_init__(self):
        if self.attention not in ATTENTION:
            raise ConfigError(f"{self.type} connector: attention={self.attention!r}; expected one of {ATTENTION}")
        if self.n_queries < 1 or self.n_layer < 1:
            raise ConfigError(f"{self.type} connector: n_queries and n_layer must be >= 1")
        if self.width % self.n_heads:
            raise ConfigError(f"{self.type} connector: width={self.width} is not divisible by n_heads={self.n_heads}")


class QueryConnector(nn.Module):
    """Learnable queries refined by ``QueryBlock``s that read the visual features. The sequence
    mixer of the blocks comes from ``make_mixer``: causal Mamba here, self-attention in Q-Former."""

    def __init__(self, cfg: QMambaConfig, d_vision: int, d_model: int, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        fk = {"device": device, "dtype": dtype}
        self.preprocess = VLMambaConnector(cfg.preprocess, d_vision, d_model, **fk) if cfg.preprocess else None
        d_kv = self.preprocess.d_out if self.preprocess is not None else d_vision
        self.kv_norm = nn.LayerNorm(d_kv, **fk)
        self.query = nn.Parameter(torch.randn(1, cfg.n_queries, cfg.width, **fk) * 0.02)
        self.blocks = nn.ModuleList(
            QueryBlock(cfg.width, d_kv, cfg.n_heads, self.make_mixer(i, **fk), cfg.ffn_mult, cfg.norm_eps, **fk)
            for i in range(cfg.n_layer)
        )
        self.norm_f = RMSNorm(cfg.width, eps=cfg.norm_eps, **fk)
        self.proj = nn.Linear(cfg.width, d_model, **fk)

    def make_mixer(self, layer_idx: int, device=None, dtype=None) -> nn.Module:
        mcfg = Mamba1Config(d_state=self.cfg.d_state, expand=self.cfg.expand, d_conv=self.cfg.d_conv)
        return Mamba(mcfg, self.cfg.width, layer_idx=layer_idx, device=device, dtype=dtype)

    def forward(self, features: Tensor) -> Tensor:
        """(b, p, d_vision) -> (b, n_queries, d_model)."""
        kv, x = self._inputs(features)
        local = self.cfg.attention == "local"
        for block in self.blocks:
            x = block(x, kv, local=local)
        return self.proj(self.norm_f(x))

    def forward_with_weights(self, features: Tensor, attention: str | None = None) -> tuple[Tensor, list[Tensor]]:
        """``forward`` that also returns each block's cross-attention weights, for attention maps:
        (b, p, d_vision) -> (b, n_queries, d_model), [(b, h, n_queries, p)] * n_layer.

        ``attention``: "local" or "global" to run the same weights with that mask instead of the config's.
        With the config's mask the output equals ``forward``'s (which runs ``ops.local_attention`` or SDPA).
        """
        attention = attention or self.cfg.attention
        if attention not in ATTENTION:
            raise ConfigError(f"attention={attention!r}; expected one of {ATTENTION}")
        kv, x = self._inputs(features)
        weights = []
        for block in self.blocks:
            x, w = block(x, kv, local=attention == "local", return_weights=True)
            weights.append(w)  # (b, h, q, p)
        return self.proj(self.norm_f(x)), weights

    def _inputs(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """The keys/values (b, p, d_kv) and the queries (b, q, width)."""
        kv = self.preprocess(features) if self.preprocess is not None else features
        kv = self.kv_norm(kv)  # (b, p, d_kv)
        x = self.query.expand(features.shape[0], -1, -1).to(kv.dtype)  # (b, q, width)
        return kv, x

    def num_tokens(self, num_patches: int) -> int:
        return self.cfg.n_queries


class QMambaConnector(QueryConnector):
    """Q-Mamba: the query blocks mix with a causal Mamba-1 layer."""

    def load_mamba_layers(self, lm_dir: str | Path) -> None:
        """Copy the first n_layer blocks' ``norm`` and ``mixer`` of a Mamba-1 LM (e.g. mamba-130m)."""
        from qmamba.models.mamba_lm import MambaLM

        lm = MambaLM.from_pretrained(lm_dir)
        layers = lm.backbone.layers
        where = f"Q-Mamba init from {lm_dir}"
        if lm.config.layer != "Mamba1" or lm.config.d_model != self.cfg.width or len(layers) < self.cfg.n_layer:
            raise CheckpointError(
                f"{where}: needs a Mamba1 LM of width {self.cfg.width} with >= {self.cfg.n_layer} layers; "
                f"got {lm.config.layer}, width {lm.config.d_model}, {len(layers)} layers")
        for block, layer in zip(self.blocks, layers):
            for name in ("norm", "mixer"):
                src, dst = getattr(layer, name).state_dict(), getattr(block, name).state_dict()
                bad = [k for k in dst if k not in src or src[k].shape != dst[k].shape]
                if bad:
                    raise CheckpointError(f"{where}: {name} tensors do not fit: {bad[:5]} (check d_state/expand)")
                getattr(block, name).load_state_dict(src)

    def load_preprocess(self, state: dict[str, Tensor], where: str) -> None:
        """Copy a trained VL-Mamba connector's weights (keys as in its own state_dict) into ``preprocess``."""
        from qmamba.models.checkpoints import load_into

        if self.preprocess is None:
            raise ConfigError(f"{where}: this Q-Mamba has no preprocess connector (set preprocess in its config)")
        load_into(self.preprocess, state, where)
