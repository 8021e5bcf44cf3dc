"""The pre-norm residual block of Mamba LMs (mamba_ssm's ``Block``) and its optional gated MLP."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from qmamba.models.cache import LayerState
from qmamba.models.norm import RMSNorm


class GatedMLP(nn.Module):
    """mamba_ssm's ``GatedMLP``: fc2(a * silu(gate)) with (a, gate) = fc1(x)."""

    def __init__(self, d_model: int, hidden: int, multiple_of: int = 128, bias: bool = False, device=None, dtype=None):
        super().__init__()
        hidden = (hidden + multiple_of - 1) // multiple_of * multiple_of
        self.fc1 = nn.Linear(d_model, 2 * hidden, bias=bias, device=device, dtype=dtype)
        self.fc2 = nn.Linear(hidden, d_model, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        y, gate = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(y * F.silu(gate))


class Block(nn.Module):
    """residual += x; x = mixer(norm(residual)) [; residual += x; x = mlp(norm2(residual))].

    The residual stream is carried separately (fp32 if ``residual_in_fp32``) so the add and the
    norm fuse into one op, as mamba_ssm does. The mixer (``Mamba`` or ``Mamba2``) provides ``forward`` over a
    sequence, ``step`` for one token and ``step_with_norm``, the step with this block's add + RMSNorm fused in.
    """

    def __init__(self, d_model: int, mixer: nn.Module, mlp: nn.Module | None = None, norm_eps: float = 1e-5,
                 rms_norm: bool = True, residual_in_fp32: bool = True, device=None, dtype=None):
        super().__init__()
        self.residual_in_fp32 = residual_in_fp32
        self.norm = RMSNorm(d_model, eps=norm_eps, rms=rms_norm, device=device, dtype=dtype)
        self.mixer = mixer
        self.mlp = mlp
        if mlp is not None:
            self.norm2 = RMSNorm(d_model, eps=norm_eps, rms=rms_norm, device=device, dtype=dtype)

    def forward(self, hidden: Tensor, residual: Tensor | None, state: LayerState | None = None,
                mask: Tensor | None = None, length: int | None = None) -> tuple[Tensor, Tensor]:
        """A sequence: hidden, residual (b, l, d) -> (hidden, residual) (b, l, d); with ``state``, continue
        from it and leave the new state there. ``mask`` (b, l): 0 on left padding. ``length``: the real
        positions of a sequence the stack right-padded (a Mamba-1 stack, ``MixerModel``), for the mixer."""
        hidden, residual = self.norm.add_forward(hidden, residual, self.residual_in_fp32)
        padded = {} if length is None else {"length": length}
        hidden = self.mixer(hidden, state=state, mask=mask, **padded)
        return self._mlp(hidden, residual)

    def step(self, hidden: Tensor, residual: Tensor | None, state: LayerState) -> tuple[Tensor, Tensor]:
        """One token from ``state``: hidden, residual (b, 1, d) -> (hidden, residual) (b, 1, d), advancing it.

        Without an MLP and with a bias-free RMSNorm the mixer's ``step_with_norm`` fuses the add-norm into its
        first kernel; otherwise the norm, the mixer's ``step`` and the MLP run one after the other."""
        if self.mlp is None and self.norm.rms and self.norm.bias is None:
            return self.mixer.step_with_norm(hidden, residual, self.norm, self.residual_in_fp32, state)
        hidden, residual = self.norm.add_forward(hidden, residual, self.residual_in_fp32)
        return self._mlp(self.mixer.step(hidden, state), residual)

    def _mlp(self, hidden: Tensor, residual: Tensor) -> tuple[Tensor, Tensor]:
        """The optional second half: residual += hidden; hidden = mlp(norm2(residual))."""
        if self.mlp is None:
            return hidden, residual
        hidden, residual = self.norm2.add_forward(hidden, residual, self.residual_in_fp32)
        return self.mlp(hidden), residual
