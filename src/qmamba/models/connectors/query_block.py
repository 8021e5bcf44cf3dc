"""The block shared by the query-based connectors (Q-Mamba, Q-Former):

    x = x + mixer(norm(x))                 sequence mixer over the queries (causal Mamba, or attention)
    x = x + xattn(norm_xattn(x), visual)   cross-attention to the visual features (local or global mask)
    x = x + ffn(norm_ffn(x))               channel mixer

``norm`` and ``mixer`` carry mamba_ssm's names, so Mamba blocks load from a Mamba LM's layers.
"""

from __future__ import annotations

from torch import Tensor, nn

from qmamba.models.connectors.attention import CrossAttention
from qmamba.models.norm import RMSNorm


class FFN(nn.Module):
    def __init__(self, d: int, mult: int = 4, device=None, dtype=None):
        super().__init__()
        self.fc1 = nn.Linear(d, mult * d, device=device, dtype=dtype)
        self.fc2 = nn.Linear(mult * d, d, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class QueryBlock(nn.Module):
    def __init__(self, d: int, d_kv: int, n_heads: int, mixer: nn.Module, ffn_mult: int = 4,
                 norm_eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.norm = RMSNorm(d, eps=norm_eps, **fk)
        self.mixer = mixer
        self.norm_xattn = RMSNorm(d, eps=norm_eps, **fk)
        self.xattn = CrossAttention(d, d_kv, n_heads, **fk)
        self.ffn = FFN(d, ffn_mult, **fk) if ffn_mult else None
        self.norm_ffn = RMSNorm(d, eps=norm_eps, **fk) if ffn_mult else None

    def forward(self, x: Tensor, visual: Tensor, mask: Tensor | None = None, local: bool = False,
                return_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x (b, q, d), visual (b, k, d_kv), mask (q, k) or None -> (b, q, d).

        ``local``: the local mask, without a mask tensor (``ops.local_attention``).
        ``return_weights``: also the cross-attention weights (b, h, q, k) (``CrossAttention``'s written-out path).
        """
        x = x + self.mixer(self.norm(x))
        if return_weights:
            y, w = self.xattn(self.norm_xattn(x), visual, mask, local, return_weights=True)
        else:
            y, w = self.xattn(self.norm_xattn(x), visual, mask, local), None
        x = x + y
        if self.ffn is not None:
            x = x + self.ffn(self.norm_ffn(x))
        return (x, w) if return_weights else x
