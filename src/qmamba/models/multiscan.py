"""Mamba mixers that scan one sequence in several orders, for 2-D visual features.

``MultiScanMamba`` (Mamba-1, VL-Mamba's Vision Selective Scan): shared ``in_proj`` / ``out_proj``,
one set of scan parameters (conv1d, x_proj, dt_proj, A_log, D) per order in ``scans.{k}``. Each
order's output is put back in the original order; the outputs are averaged, so running only some
orders at inference (the paper's Table 4: forward-only, backward-only) keeps the scale.

``BiMamba2`` (ML-Mamba's Mamba-2 scan): a Mamba-2 mixer plus backward copies ``conv1d_b``,
``dt_bias_b``, ``A_log_b``, ``D_b`` (ML-Mamba's names); the backward scan reads the projected
sequence reversed; both outputs are gated and normalised, averaged, then projected out.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor, nn

from qmamba.errors import ConfigError
from qmamba.models.mamba1 import Mamba1Config, SSMParams, ssm_scan
from qmamba.models.mamba2 import Mamba2, Mamba2Config, SSDParams, ssd_scan
from qmamba.ops.mamba_inner import linear_channels_first, linear_from_channels, pad_to_aligned

SCAN_ORDERS = {"bsm": ("forward", "backward"),
               "csm": ("forward", "backward", "column_forward", "column_backward")}


def scan_order(name: str, length: int, grid: tuple[int, int] | None, device=None) -> Tensor:
    """Positions (l,) of the raster sequence in the order a scan visits them."""
    idx = torch.arange(length, device=device)
    if name.startswith("column"):
        if grid is None or grid[0] * grid[1] != length:
            raise ConfigError(f"a column scan needs the patch grid; {length} patches do not form grid {grid}")
        idx = idx.view(grid).t().reshape(-1)  # column-major order
    return idx.flip(0) if name.endswith("backward") else idx


class MultiScanMamba(nn.Module):
    """x (b, l, d) -> (b, l, d), scanning the sequence in each order of ``scans`` and averaging."""

    def __init__(self, cfg: Mamba1Config, d_model: int, orders: tuple[str, ...], device=None, dtype=None):
        super().__init__()
        di = cfg.expand * d_model
        self.orders, self.d_inner, self.d_state = orders, di, cfg.d_state
        self.in_proj = nn.Linear(d_model, 2 * di, bias=cfg.bias, device=device, dtype=dtype)
        self.scans = nn.ModuleList(SSMParams(cfg, d_model, device, dtype) for _ in orders)
        self.out_proj = nn.Linear(di, d_model, bias=cfg.bias, device=device, dtype=dtype)

    def forward(self, x: Tensor, grid: tuple[int, int] | None = None, active: tuple[str, ...] | None = None) -> Tensor:
        """x (b, l, d) -> (b, l, d). Forward and backward scans alone run right-padded to aligned rows, padded
        once for all scans (``ops.mamba_inner.pad_to_aligned``), each scan with its padding after the real
        positions. A column order needs the sequence to be its patch grid, so with one active all run unpadded."""
        names = [n for n in self.orders if active is None or n in active]
        if not names:
            raise ConfigError(f"no active scan among {self.orders} (asked for {active})")
        l = x.shape[1]
        if all(n in ("forward", "backward") for n in names):
            x, _ = pad_to_aligned(x, None, self.d_inner, self.d_state, keeps_state=False)  # (b, lp, d)
        xz = linear_channels_first(x, self.in_proj)  # in_proj: (b, 2 di, lp)
        ys = []
        for name, params in zip(self.orders, self.scans):
            if name not in names:
                continue
            xk, zk = reorder(xz, name, grid, length=l).chunk(2, dim=1)  # (b, di, lp) in scan order
            ys.append(reorder(ssm_scan(params, xk, zk, None, None), name, grid, back=True, length=l))  # raster
        y = ys[0] if len(ys) == 1 else torch.stack(ys).mean(0)  # (b, di, lp)
        out = linear_from_channels(y, self.out_proj)  # out_proj: (b, lp, d)
        return out if out.shape[1] == l else out[:, :l]


def reorder(t: Tensor, name: str, grid: tuple[int, int] | None, back: bool = False,
            length: int | None = None) -> Tensor:
    """t (b, c, l) in raster order -> the order scan ``name`` visits (``back``: the inverse). The forward
    order is t itself and the backward one a flip: no index gather (a flip copies at bandwidth, a gather does
    not; benchmarks/profile_vqa.py shows the preprocessing's kernels). ``length`` < l: the first
    ``length`` positions are real and the rest right padding, which the backward order keeps at the end
    (zeros), after its real positions, so that no scan meets padding before a real position."""
    if name == "forward":
        return t
    if name == "backward":
        n = t.shape[-1] if length is None else length
        if n == t.shape[-1]:
            return t.flip(-1)
        out = torch.empty_like(t)
        out[..., :n] = t[..., :n].flip(-1)
        out[..., n:] = 0
        return out
    order = scan_order(name, t.shape[-1], grid, t.device)
    return t[:, :, torch.argsort(order) if back else order]


class BiMamba2(Mamba2):
    """Mamba-2 mixer reading the sequence forward and backward: hidden (b, l, d) -> (b, l, d)."""

    def __init__(self, cfg: Mamba2Config, d_model: int, device=None, dtype=None):
        super().__init__(cfg, d_model, device=device, dtype=dtype)
        if not cfg.rmsnorm or self.d_mlp:
            raise ConfigError("BiMamba2 needs rmsnorm=True and d_ssm == d_inner")
        back = SSDParams(cfg, d_model, device, dtype)
        self.conv1d_b, self.dt_bias_b, self.A_log_b, self.D_b = back.conv1d, back.dt_bias, back.A_log, back.D

    def forward(self, hidden: Tensor, active: tuple[str, ...] | None = None) -> Tensor:  # type: ignore[override]
        active = active or ("forward", "backward")
        _, _, z, xBC, dt = self._split(self.in_proj(hidden))
        ys = []
        if "forward" in active:
            ys.append(self.norm(ssd_scan(self, self, xBC, dt, None, None, None), z))
        if "backward" in active:
            back = SimpleNamespace(conv1d=self.conv1d_b, dt_bias=self.dt_bias_b, A_log=self.A_log_b, D=self.D_b)
            y_b = ssd_scan(self, back, xBC.flip(1), dt.flip(1), None, None, None)
            ys.append(self.norm(y_b, z.flip(1)).flip(1))
        if not ys:
            raise ConfigError(f"active must name 'forward' and/or 'backward', got {active}")
        return self.out_proj(torch.stack(ys).mean(0))
