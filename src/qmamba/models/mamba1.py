"""Mamba-1 mixer (selective SSM), parameter for parameter as mamba_ssm's ``Mamba``.

    in_proj: d -> 2 di (x, z)   conv1d: depthwise, width d_conv   x_proj: di -> dt_rank + 2n
    dt_proj: dt_rank -> di      A_log: (di, n)   D: (di,)   out_proj: di -> d
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmamba.models.cache import LayerState
from qmamba.ops import causal_conv1d, causal_conv1d_update, gemv, mamba1_decode_ssm, selective_scan, step_in
from qmamba.ops.mamba_inner import (
    linear_channels_first,
    linear_from_channels,
    pad_to_aligned,
    project_channels,
    skip_padding,
)
from qmamba.utils.config import config_from_dict

# Fields of mamba_ssm's Mamba.__init__ that choose kernels or placement, not the math.
_IGNORED_SSM_KEYS = ("layer", "use_fast_path", "layer_idx", "device", "dtype")


@dataclass
class Mamba1Config:
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False

    @classmethod
    def from_ssm_cfg(cls, ssm_cfg: dict, where: str = "ssm_cfg") -> Mamba1Config:
        return config_from_dict(cls, ssm_cfg, where, ignore=_IGNORED_SSM_KEYS)

    def resolved_dt_rank(self, d_model: int) -> int:
        return math.ceil(d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)


def init_dt_bias(n: int, dt_min: float, dt_max: float, floor: float, device=None) -> Tensor:
    """softplus^-1 of dt drawn log-uniformly in [dt_min, dt_max] (mamba_ssm's dt init)."""
    dt = torch.exp(torch.rand(n, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


class SSMParams(nn.Module):
    """The parameters of one scan direction: conv1d, x_proj, dt_proj, A_log, D."""

    def __init__(self, cfg: Mamba1Config, d_model: int, device=None, dtype=None):
        super().__init__()
        di, n = cfg.expand * d_model, cfg.d_state
        dt_rank = cfg.resolved_dt_rank(d_model)
        fk = {"device": device, "dtype": dtype}
        self.conv1d = nn.Conv1d(di, di, cfg.d_conv, groups=di, padding=cfg.d_conv - 1, bias=cfg.conv_bias, **fk)
        self.x_proj = nn.Linear(di, dt_rank + 2 * n, bias=False, **fk)
        self.dt_proj = nn.Linear(dt_rank, di, bias=True, **fk)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32, device=device)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di, device=device))
        self.A_log._no_weight_decay = self.D._no_weight_decay = True
        std = dt_rank**-0.5 * cfg.dt_scale
        with torch.no_grad():
            if cfg.dt_init == "constant":
                nn.init.constant_(self.dt_proj.weight, std)
            else:
                nn.init.uniform_(self.dt_proj.weight, -std, std)
            self.dt_proj.bias.copy_(init_dt_bias(di, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor, device))
        self.dt_proj.bias._no_reinit = True
        self.dt_rank, self.d_state = dt_rank, n


def ssm_scan(p: SSMParams, x: Tensor, z: Tensor, state: LayerState | None, mask: Tensor | None,
             length: int | None = None) -> Tensor:
    """conv -> x_proj / dt_proj -> selective scan gated by silu(z), for one direction; x, z (b, di, l) -> y (b, di, l).

    ``mask`` (b, l), 1 for real tokens: masked positions neither enter the conv nor change the state.
    ``length``: the real positions when the tail is right padding (``ops.mamba_inner``), which the state skips.
    """
    if mask is not None:
        x = x * mask[:, None, :].to(x.dtype)
    x_in = x  # the conv's inputs, the next conv state's source
    init_conv = state.conv_state[:, :, 1:] if state is not None else None
    x = causal_conv1d(x, p.conv1d.weight.squeeze(1), p.conv1d.bias, initial_states=init_conv,
                      activation="silu")  # (b, di, l)
    x_dbl = project_channels(p.x_proj.weight, x)  # (b, dt_rank + 2n, l)
    dt, B, C = torch.split(x_dbl, [p.dt_rank, p.d_state, p.d_state], dim=1)  # (b, dt_rank, l), (b, n, l) x 2
    dt = project_channels(p.dt_proj.weight, dt)  # (b, di, l), dt_proj's bias goes into the scan's softplus
    if state is not None and mask is None:
        dt = skip_padding(dt, length)  # the right padding leaves the carried state as it is
    A = -torch.exp(p.A_log.float())  # (di, n)
    dt_bias, softplus = p.dt_proj.bias.float(), True
    if mask is not None:  # dt = 0 on padding: exp(0 * A) = 1 and no input, the state passes through
        dt = F.softplus(dt.float() + dt_bias[:, None]) * mask[:, None, :]
        dt_bias, softplus = None, False
    y = selective_scan(
        x, dt, A, B, C, D=p.D.float(), z=z, delta_bias=dt_bias,
        delta_softplus=softplus, initial_state=state.ssm_state if state is not None else None,
        return_last_state=state is not None,
    )  # (b, di, l)
    if state is not None:
        y, last = y
        state.advance(x_in if length is None else x_in[:, :, :length], last)  # real inputs only
    return y


def ssm_step(p: SSMParams, x: Tensor, z: Tensor, state: LayerState) -> Tensor:
    """One token for one direction; x, z: (b, di) -> y (b, di)."""
    w = p.conv1d.weight.squeeze(1)
    x = causal_conv1d_update(x, state.conv_state, w, p.conv1d.bias, activation="silu")  # (b, di)
    return ssm_step_after_conv(p, x, z, state)


def ssm_step_after_conv(p: SSMParams, x: Tensor, z: Tensor, state: LayerState, x_dbl: Tensor | None = None) -> Tensor:
    """The rest of ``ssm_step`` once the conv state has taken the token; x: silu(conv) (b, di) -> y (b, di).
    x_dbl: x_proj(x) (b, dt_rank + 2 d_state) when already computed."""
    x_dbl = gemv(x, p.x_proj.weight) if x_dbl is None else x_dbl
    dt_low, B, C = torch.split(x_dbl, [p.dt_rank, p.d_state, p.d_state], dim=-1)
    # dt_proj, softplus, A = -exp(A_log), the state update, D and the gate: one fused op
    return mamba1_decode_ssm(state.ssm_state, x, dt_low, p.dt_proj.weight, p.dt_proj.bias, p.A_log, B, C, D=p.D, z=z)


class Mamba(SSMParams):
    """The Mamba-1 mixer: in_proj -> (conv, selective scan) gated by silu(z) -> out_proj."""

    def __init__(self, cfg: Mamba1Config, d_model: int, layer_idx: int | None = None, device=None, dtype=None):
        super().__init__(cfg, d_model, device, dtype)
        self.cfg, self.d_model, self.layer_idx = cfg, d_model, layer_idx
        self.d_inner = cfg.expand * d_model
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=cfg.bias, device=device, dtype=dtype)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=cfg.bias, device=device, dtype=dtype)

    def forward(self, hidden: Tensor, state: LayerState | None = None, mask: Tensor | None = None,
                length: int | None = None) -> Tensor:
        """hidden (b, l, d) -> (b, l, d); with ``state``, continue from it and leave the new state there.

        ``length``: hidden is a sequence right-padded by the stack (``MixerModel``), its first ``length``
        positions real; the output keeps the padded length. Without it the mixer is the whole pass over its
        sequence (e.g. Q-Mamba's queries) and pads and crops it itself (``ops.mamba_inner.pad_to_aligned``).
        """
        l = hidden.shape[1]
        if length is None:
            hidden, mask = pad_to_aligned(hidden, mask, self.d_inner, self.cfg.d_state, state is not None)
        x, z = linear_channels_first(hidden, self.in_proj).chunk(2, dim=1)  # in_proj: (b, di, lp) each
        y = ssm_scan(self, x, z, state, mask, length=l if length is None else length)  # (b, di, lp)
        out = linear_from_channels(y, self.out_proj)  # out_proj: (b, lp, d)
        return out if out.shape[1] == l else out[:, :l]

    def step(self, hidden: Tensor, state: LayerState) -> Tensor:
        """hidden (b, 1, d) -> (b, 1, d), advancing ``state`` by one token."""
        x, z = gemv(hidden.squeeze(1), self.in_proj.weight, self.in_proj.bias).chunk(2, dim=-1)  # (b, di) each
        return gemv(ssm_step(self, x, z, state), self.out_proj.weight, self.out_proj.bias).unsqueeze(1)

    def step_with_norm(self, hidden: Tensor, residual: Tensor | None, norm: nn.Module, residual_in_fp32: bool,
                       state: LayerState) -> tuple[Tensor, Tensor]:
        """The block's residual add + RMSNorm and ``step`` together (``step_in`` fuses the add-norm, in_proj,
        the conv update and x_proj): hidden, residual (b, 1, d) -> (out (b, 1, d), new residual (b, 1, d))."""
        xz, residual, x_dbl = step_in(
            hidden.squeeze(1), None if residual is None else residual.squeeze(1), norm.weight, norm.eps,
            self.in_proj.weight, self.in_proj.bias, state.conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias,
            0, residual_in_fp32, self.x_proj.weight)
        x, z = xz.chunk(2, dim=-1)  # x: after the conv, (b, di) each
        y = ssm_step_after_conv(self, x, z, state, x_dbl)
        return gemv(y, self.out_proj.weight, self.out_proj.bias).unsqueeze(1), residual.unsqueeze(1)

    def allocate_state(self, batch_size: int, dtype=None, device=None) -> LayerState:
        device = device or self.out_proj.weight.device
        conv_dtype = dtype or self.conv1d.weight.dtype
        return LayerState(
            conv_state=torch.zeros(batch_size, self.d_inner, self.cfg.d_conv, device=device, dtype=conv_dtype),
            ssm_state=torch.zeros(batch_size, self.d_inner, self.cfg.d_state, device=device, dtype=torch.float32),
        )
