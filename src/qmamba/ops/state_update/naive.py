"""One-token SSM state update (decode step), pure PyTorch: the ground truth and the ``ref`` backend. Updates
``state`` in place.

Mamba-1:  state (b, d, n), x/dt/z (b, d), A (d, n), B/C (b, n), D/dt_bias (d,)
Mamba-2:  state (b, h, p, n), x/dt/z (b, h, p), A (h, p, n), B/C (b, g, n), D/dt_bias (h, p)

    state = exp(dt * A) * state + dt * B * x;   out = <C, state> + D * x  (* silu(z))

``mamba1_decode_ssm_ref`` is Mamba-1's whole step after x_proj (dt_proj, -exp(A_log), softplus, update,
D, gate) from the stored parameters: the contract of the fused decode kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def selective_state_update_ref(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    A_is_log: bool = False,
) -> Tensor:
    """Advance ``state`` by one token and return the output, shaped like ``x``.

    ``A_is_log``: ``A`` holds A_log as stored (the decay rate is -exp(A_log)), which the kernel folds in."""
    if A_is_log:
        A = -torch.exp(A.float())
    heads = state.dim() == 4
    if not heads:  # Mamba-1 is the one-head, one-group case
        state_, x_, dt_, A_ = state.unsqueeze(1), x.unsqueeze(1), dt.unsqueeze(1), A.unsqueeze(0)
        B_, C_ = B.unsqueeze(1), C.unsqueeze(1)
        D_ = D.unsqueeze(0) if D is not None else None
        z_ = z.unsqueeze(1) if z is not None else None
        dt_bias_ = dt_bias.unsqueeze(0) if dt_bias is not None else None
    else:
        state_, x_, dt_, A_, B_, C_, D_, z_, dt_bias_ = state, x, dt, A, B, C, D, z, dt_bias
    h, g = state_.shape[1], B_.shape[1]
    dt32 = dt_.float()
    if dt_bias_ is not None:
        dt32 = dt32 + dt_bias_.float()
    if dt_softplus:
        dt32 = F.softplus(dt32)
    B32 = B_.float().repeat_interleave(h // g, dim=1).unsqueeze(2)  # (b, h, 1, n)
    C32 = C_.float().repeat_interleave(h // g, dim=1).unsqueeze(2)
    dA = (dt32.unsqueeze(-1) * A_.float()).exp()  # (b, h, p, n)
    new = state_.float() * dA + (dt32 * x_.float()).unsqueeze(-1) * B32
    state_.copy_(new.to(state_.dtype))
    out = (new * C32).sum(-1)  # (b, h, p)
    if D_ is not None:
        out = out + x_.float() * D_.float()
    if z_ is not None:
        out = out * F.silu(z_.float())
    out = out.to(x.dtype)
    return out if heads else out.squeeze(1)


def mamba1_decode_ssm_ref(
    state: Tensor,
    x: Tensor,
    dt_low: Tensor,
    dt_weight: Tensor,
    dt_bias: Tensor,
    A_log: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
) -> Tensor:
    """Mamba-1's decode step after x_proj, from the parameters as stored: dt_proj, A = -exp(A_log), the
    softplus of dt + dt_bias, the state update, D and the gate. Updates ``state`` in place.

    state (b, d, n); x, z (b, d); dt_low (b, r); dt_weight (d, r); dt_bias, D (d,); A_log (d, n); B, C (b, n).
    dt is accumulated in fp32 (mamba_ssm rounds dt_proj's output to the weights' dtype first).
    """
    dt = dt_low.float() @ dt_weight.float().t()  # (b, d)
    return selective_state_update_ref(state, x, dt, A_log, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=True,
                                      A_is_log=True)
