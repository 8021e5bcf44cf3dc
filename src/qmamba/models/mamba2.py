"""Mamba-2 mixer (SSD), parameter for parameter as mamba_ssm's ``Mamba2``.

    in_proj: d -> [z0, x0 (d_mlp each), z (d_ssm), xBC (d_ssm + 2 g n), dt (h)]
    conv1d over xBC   dt_bias, A_log, D: (h,) (D: (d_ssm,) if D_has_hdim)
    norm: gated RMSNorm over groups of d_ssm / g   out_proj: d_inner -> d
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmamba.errors import ConfigError
from qmamba.models.cache import LayerState
from qmamba.models.mamba1 import init_dt_bias
from qmamba.models.norm import RMSNormGated
from qmamba.ops import (
    causal_conv1d,
    causal_conv1d_update,
    gemv,
    selective_state_update,
    ssd_chunk_scan,
    step_in,
    step_out,
)
from qmamba.utils.config import config_from_dict

_IGNORED_SSM_KEYS = (
    "layer", "use_mem_eff_path", "layer_idx", "device", "dtype", "process_group", "sequence_parallel",
)


@dataclass
class Mamba2Config:
    d_state: int = 128
    d_conv: int = 4
    conv_init: float | None = None
    expand: int = 2
    headdim: int = 64
    d_ssm: int | None = None
    ngroups: int = 1
    A_init_range: tuple[float, float] = (1.0, 16.0)
    D_has_hdim: bool = False
    rmsnorm: bool = True
    norm_before_gate: bool = False
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_limit: tuple[float, float] = (0.0, float("inf"))
    bias: bool = False
    conv_bias: bool = True
    chunk_size: int = 256

    @classmethod
    def from_ssm_cfg(cls, ssm_cfg: dict, where: str = "ssm_cfg") -> Mamba2Config:
        cfg = config_from_dict(cls, ssm_cfg, where, ignore=_IGNORED_SSM_KEYS)
        cfg.A_init_range, cfg.dt_limit = tuple(cfg.A_init_range), tuple(float(v) for v in cfg.dt_limit)
        return cfg

    def dims(self, d_model: int) -> tuple[int, int, int]:
        """(d_inner, d_ssm, nheads), checked for divisibility."""
        d_inner = self.expand * d_model
        d_ssm = self.d_ssm or d_inner
        if d_ssm % self.headdim or (d_ssm // self.headdim) % self.ngroups:
            raise ConfigError(
                f"Mamba2: d_ssm={d_ssm} must split into heads of headdim={self.headdim}, "
                f"and the heads into ngroups={self.ngroups} equal groups"
            )
        return d_inner, d_ssm, d_ssm // self.headdim


class SSDParams(nn.Module):
    """The parameters of one SSD scan direction: conv1d, dt_bias, A_log, D."""

    def __init__(self, cfg: Mamba2Config, d_model: int, device=None, dtype=None):
        super().__init__()
        _, d_ssm, h = cfg.dims(d_model)
        conv_dim = d_ssm + 2 * cfg.ngroups * cfg.d_state
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, cfg.d_conv, groups=conv_dim, padding=cfg.d_conv - 1,
                                bias=cfg.conv_bias, device=device, dtype=dtype)
        if cfg.conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -cfg.conv_init, cfg.conv_init)
        self.dt_bias = nn.Parameter(init_dt_bias(h, cfg.dt_min, cfg.dt_max, cfg.dt_init_floor, device))
        A = torch.empty(h, dtype=torch.float32, device=device).uniform_(*cfg.A_init_range)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_ssm if cfg.D_has_hdim else h, device=device))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.conv_dim = conv_dim


class Mamba2(SSDParams):
    """The Mamba-2 mixer: in_proj -> conv over (x, B, C) -> SSD scan -> gated RMSNorm -> out_proj."""

    def __init__(self, cfg: Mamba2Config, d_model: int, layer_idx: int | None = None, device=None, dtype=None):
        super().__init__(cfg, d_model, device, dtype)
        self.cfg, self.d_model, self.layer_idx = cfg, d_model, layer_idx
        self.d_inner, self.d_ssm, self.nheads = cfg.dims(d_model)
        self.d_mlp = self.d_inner - self.d_ssm
        d_in_proj = 2 * self.d_inner + 2 * cfg.ngroups * cfg.d_state + self.nheads
        fk = {"device": device, "dtype": dtype}
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=cfg.bias, **fk)
        if cfg.rmsnorm:
            self.norm = RMSNormGated(self.d_ssm, eps=1e-5, group_size=self.d_ssm // cfg.ngroups,
                                     norm_before_gate=cfg.norm_before_gate, **fk)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=cfg.bias, **fk)

    def _split(self, zxbcdt: Tensor):
        gn = self.cfg.ngroups * self.cfg.d_state
        return torch.split(zxbcdt, [self.d_mlp, self.d_mlp, self.d_ssm, self.d_ssm + 2 * gn, self.nheads], dim=-1)

    def _gate(self, y: Tensor, z: Tensor, z0: Tensor, x0: Tensor) -> Tensor:
        """Gate / norm the scan output (..., d_ssm) and prepend the MLP part: out_proj's input (..., d_inner)."""
        if self.cfg.rmsnorm:
            y = self.norm(y, z)
        if self.d_mlp > 0:
            y = torch.cat([F.silu(z0) * x0, y], dim=-1)
        return y

    def _step_out(self, y: Tensor, z: Tensor, z0: Tensor, x0: Tensor) -> Tensor:
        """out_proj of one token's gated output (b, d_ssm) -> (b, d): ``step_out`` (the gated norm and out_proj,
        fused for one row where measured faster), or the gate and a ``gemv``."""
        if self.cfg.rmsnorm and self.d_mlp == 0:
            return step_out(y, z, self.norm.weight, self.norm.eps, self.out_proj.weight, self.out_proj.bias,
                            self.norm.group_size, self.norm.norm_before_gate)
        return gemv(self._gate(y, z, z0, x0), self.out_proj.weight, self.out_proj.bias)

    def forward(self, hidden: Tensor, state: LayerState | None = None, mask: Tensor | None = None) -> Tensor:
        """hidden (b, l, d) -> (b, l, d); with ``state``, continue from it and leave the new state there."""
        z0, x0, z, xBC, dt = self._split(self.in_proj(hidden))
        y = ssd_scan(self, self, xBC, dt, None if self.cfg.rmsnorm else z, state, mask)  # (b, l, d_ssm)
        return self.out_proj(self._gate(y, z, z0, x0))

    def step(self, hidden: Tensor, state: LayerState) -> Tensor:
        """hidden (b, 1, d) -> (b, 1, d), advancing ``state`` by one token."""
        z0, x0, z, xBC, dt = self._split(gemv(hidden.squeeze(1), self.in_proj.weight, self.in_proj.bias))
        y = ssd_step(self, self, xBC, dt, None if self.cfg.rmsnorm else z, state)  # (b, d_ssm)
        return self._step_out(y, z, z0, x0).unsqueeze(1)

    def step_with_norm(self, hidden: Tensor, residual: Tensor | None, norm: nn.Module, residual_in_fp32: bool,
                       state: LayerState) -> tuple[Tensor, Tensor]:
        """The block's residual add + RMSNorm and ``step`` together (``step_in`` fuses the add-norm, in_proj
        and the conv update of xBC): hidden, residual (b, 1, d) -> (out (b, 1, d), new residual (b, 1, d))."""
        zxbcdt, residual, _ = step_in(
            hidden.squeeze(1), None if residual is None else residual.squeeze(1), norm.weight, norm.eps,
            self.in_proj.weight, self.in_proj.bias, state.conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias,
            2 * self.d_mlp + self.d_ssm, residual_in_fp32)
        z0, x0, z, xBC, dt = self._split(zxbcdt)  # xBC: after the conv
        y = ssd_step_after_conv(self, self, xBC, dt, None if self.cfg.rmsnorm else z, state)  # (b, d_ssm)
        out = self._step_out(y, z, z0, x0)
        return out.unsqueeze(1), residual.unsqueeze(1)

    def allocate_state(self, batch_size: int, dtype=None, device=None) -> LayerState:
        device = device or self.out_proj.weight.device
        p = self.cfg.headdim
        return LayerState(
            conv_state=torch.zeros(batch_size, self.conv_dim, self.cfg.d_conv, device=device,
                                   dtype=dtype or self.conv1d.weight.dtype),
            ssm_state=torch.zeros(batch_size, self.nheads, p, self.cfg.d_state, device=device, dtype=torch.float32),
        )


def _split_xbc(m: Mamba2, xBC: Tensor):
    gn = m.cfg.ngroups * m.cfg.d_state
    x, B, C = torch.split(xBC, [m.d_ssm, gn, gn], dim=-1)
    return x, B.unflatten(-1, (m.cfg.ngroups, m.cfg.d_state)), C.unflatten(-1, (m.cfg.ngroups, m.cfg.d_state))


def ssd_scan(m: Mamba2, p: SSDParams, xBC: Tensor, dt: Tensor, z: Tensor | None,
             state: LayerState | None, mask: Tensor | None) -> Tensor:
    """conv over xBC -> SSD scan for one direction; xBC (b, l, conv_dim), dt (b, l, h) -> y (b, l, d_ssm)."""
    xBC = xBC.transpose(1, 2)  # (b, conv_dim, l)
    if mask is not None:
        xBC = xBC * mask[:, None, :].to(xBC.dtype)
    init_conv = state.conv_state[:, :, 1:] if state is not None else None
    conv = causal_conv1d(xBC, p.conv1d.weight.squeeze(1), p.conv1d.bias, initial_states=init_conv,
                         activation="silu").transpose(1, 2)  # (b, l, conv_dim)
    x, B, C = _split_xbc(m, conv)
    dt_bias, softplus = p.dt_bias, True
    if mask is not None:  # dt = 0 on padding: no decay and no input, the state passes through
        dt = F.softplus(dt.float() + p.dt_bias.float()) * mask[:, :, None]
        dt_bias, softplus = None, False
    hp = (m.nheads, m.cfg.headdim)
    D = p.D.view(hp) if m.cfg.D_has_hdim else p.D
    y = ssd_chunk_scan(
        x.unflatten(-1, hp), dt, -torch.exp(p.A_log.float()), B, C, m.cfg.chunk_size, D=D,
        z=z.unflatten(-1, hp) if z is not None else None, dt_bias=dt_bias, dt_softplus=softplus,
        dt_limit=m.cfg.dt_limit, initial_states=state.ssm_state if state is not None else None,
        return_final_states=state is not None,
    )
    if state is not None:
        y, final = y
        state.advance(xBC, final)
    return y.flatten(-2)


def ssd_step(m: Mamba2, p: SSDParams, xBC: Tensor, dt: Tensor, z: Tensor | None, state: LayerState) -> Tensor:
    """One token for one direction; xBC (b, conv_dim), dt (b, h) -> y (b, d_ssm)."""
    xBC = causal_conv1d_update(xBC, state.conv_state, p.conv1d.weight.squeeze(1), p.conv1d.bias, activation="silu")
    return ssd_step_after_conv(m, p, xBC, dt, z, state)


def ssd_step_after_conv(m: Mamba2, p: SSDParams, xBC: Tensor, dt: Tensor, z: Tensor | None,
                        state: LayerState) -> Tensor:
    """The rest of ``ssd_step`` once the conv state has taken the token; xBC: silu(conv) (b, conv_dim)."""
    x, B, C = _split_xbc(m, xBC)
    h, hd, n = m.nheads, m.cfg.headdim, m.cfg.d_state
    A_log = p.A_log[:, None, None].expand(h, hd, n)  # -exp(A_log) is taken inside the state update
    D = p.D.view(h, hd) if m.cfg.D_has_hdim else p.D[:, None].expand(h, hd)
    y = selective_state_update(
        state.ssm_state, x.view(-1, h, hd), dt[:, :, None].expand(-1, h, hd), A_log, B, C, D=D,
        z=z.view(-1, h, hd) if z is not None else None, dt_bias=p.dt_bias[:, None].expand(h, hd), dt_softplus=True,
        A_is_log=True,
    )
    return y.flatten(-2)
